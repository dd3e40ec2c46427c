"""Crash-isolated headless Blender workers, shared by `ulip2 triplets build` and `ulip2 index`.

Each worker is a `python -m blender_addon.headless.worker` process (started by module
name, so core never imports bpy) that answers one job per line (core.blender_jobs holds the
jobs and answers; blender_addon/headless/worker.py runs them). A file that crashes Blender, or hangs past the timeout, costs that one process: its
job is answered as failed with the reason and the last lines of the worker's log, and the
next job starts a fresh worker.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from core.blender_jobs import Answer, failed, job_line, read_answer

#: What a file that needs Blender gets when bpy is not installed.
NEEDS_BLENDER = "needs the blender extra: pip install 'ulip2[blender]'"
#: Seconds a Blender worker may spend on one file before it is killed and the file failed.
BLENDER_TIMEOUT_S = 600.0
# Lines of a crashed worker's log quoted in its file's failure reason.
LOG_TAIL_LINES = 3

J = TypeVar("J")
R = TypeVar("R")


def blender_available() -> bool:
    """Whether this environment can start a worker (bpy is importable)."""
    return importlib.util.find_spec("bpy") is not None


class Worker:
    """One `python -m blender_addon.headless.worker` process; restarted after it dies."""

    def __init__(self, log: Path):
        self.log, self.process, self.log_start = Path(log), None, 0

    def run(self, job, timeout: float) -> Answer:
        """The worker's answer to `job` (a core.blender_jobs job), or a failed one that says
        why the worker gave none (it crashed, or ran past `timeout`)."""
        if self.process is None or self.process.poll() is not None:
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "blender_addon.headless.worker", "--parent", str(os.getpid())],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        self.log_start = self.log.stat().st_size  # this job's output starts here
        killed = threading.Event()
        process = self.process

        def kill() -> None:
            killed.set()
            process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            self.process.stdin.write(job_line(job) + "\n")
            answer = self.process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        finally:
            timer.cancel()
        if answer:
            return read_answer(job, answer)
        code = self.process.wait()
        if killed.is_set():
            reason = f"timed out after {timeout:.0f} s (the worker was killed)"
        else:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            reason = f"Blender crashed on this file ({how}); last output: {self._log_tail()}"
        return failed(job, reason)

    def _log_tail(self) -> str:
        with open(self.log, "rb") as log:
            log.seek(self.log_start)
            text = log.read().decode(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-LOG_TAIL_LINES:])[-400:]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def run_jobs(jobs: Iterable[J], *, workers: int | None, timeout: float, log_dir: Path,
             task: Callable[[Worker, J], R] | None = None) -> Iterator[tuple[J, R]]:
    """(job, result) pairs as they complete, from `workers` worker processes (None: one
    per CPU; at least one, and no more than there are jobs).

    jobs: core.blender_jobs jobs, or whatever `task` takes. task(worker, job) runs in the
    worker's thread and gives the result; by default the worker's answer
    (worker.run(job, timeout)). Callers that must act next to the job
    (the triplet build commits each record there) pass their own. Closing the iterator
    early (a break) starts no further job and returns once the running ones are done.
    """
    pending: queue.Queue = queue.Queue()
    for job in jobs:
        pending.put(job)
    done: queue.Queue = queue.Queue()
    log_dir.mkdir(parents=True, exist_ok=True)
    run = task or (lambda worker, job: worker.run(job, timeout))

    def slot(index: int) -> None:
        worker = Worker(log_dir / f"worker-{index}.log")
        try:
            while True:
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((job, run(worker, job)))
                except BaseException as exc:  # hand it to the caller instead of hanging it
                    done.put((job, exc))
        finally:
            worker.close()
            done.put(None)

    slots = min(max(1, (os.cpu_count() or 1) if workers is None else workers), max(1, pending.qsize()))
    threads = [threading.Thread(target=slot, args=(i,), daemon=True) for i in range(slots)]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            item = done.get()
            if item is None:
                running -= 1
                continue
            if isinstance(item[1], BaseException):
                raise item[1]
            yield item
    finally:
        # The caller stopped early (a cancel, an error): no new job starts, and each worker
        # ends after the one it is on, so no Blender process outlives the run.
        while True:
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        for thread in threads:
            thread.join()
