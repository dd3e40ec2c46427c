"""Jobs: the window's core calls, each on a QThreadPool thread, their outcome delivered on
the UI thread, so the window never blocks. Errors become one readable line (the traceback
goes to stderr for a bug report, never to the window)."""

from __future__ import annotations

import itertools
import sqlite3
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from core.errors import Ulip2Error


class TaskSignals(QObject):
    # A QRunnable is not a QObject: its signals live on this companion, made on the UI
    # thread, and reach the Jobs there through queued connections. Each names its task.
    progress = Signal(int, int, int)  # task, done, total
    done = Signal(int, object)  # task, the call's return value
    failed = Signal(int, str)  # task, a readable message


class Task(QRunnable):
    """Runs fn(*args, **kwargs) once. With `reports=True` fn also gets on_progress (emits
    progress) and should_stop (True once cancel() was called), the indexer's hooks."""

    def __init__(self, serial: int, fn, *args, reports: bool = False, **kwargs):
        super().__init__()
        self.serial = serial
        self.signals = TaskSignals()
        self._stop = threading.Event()
        if reports:
            kwargs.update(on_progress=lambda done, total: self.signals.progress.emit(serial, done, total),
                          should_stop=self._stop.is_set)
        self._call = lambda: fn(*args, **kwargs)

    def cancel(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            result = self._call()
        except Exception as exc:  # a worker that dies silently would leave the window waiting forever
            self.signals.failed.emit(self.serial, readable_error(exc))
            return
        self.signals.done.emit(self.serial, result)


@dataclass
class _Job:
    kind: str
    task: Task
    done: Callable[[object], None]
    failed: Callable[[str], None]
    progress: Callable[[int, int], None] | None


class Jobs(QObject):
    """The window's one job controller. A job has a kind ("search", "details", ...); each
    kind says what to run and what to do with the result or the error, both called on the
    UI thread. A new job of a kind supersedes the one still running (asked to stop; what it
    returns is dropped, so only the latest search or selection shows), unless started
    `queued`: then it runs when the one before it has ended, and nothing is dropped (writes
    such as saving tags happen in the order they were asked for)."""

    #: Threads beside the UI's: index, thumbnails and labelling each hold one for minutes,
    #: and a search or a selection must not wait behind them.
    THREADS = 4

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max(QThread.idealThreadCount(), self.THREADS))
        self._serials = itertools.count(1)
        self._jobs: dict[int, _Job] = {}  # started and not yet delivered: keeps each Task (and its signals) alive
        self._current: dict[str, int] = {}  # kind: the job whose outcome will be delivered
        self._waiting: dict[str, deque[_Job]] = {}  # kind: queued jobs, oldest first

    def start(self, kind: str, fn: Callable, *args, done: Callable[[object], None], failed: Callable[[str], None],
              progress: Callable[[int, int], None] | None = None, queued: bool = False, **kwargs) -> None:
        """Run fn(*args, **kwargs) on the pool as the job of `kind`; done(result) or
        failed(message) follow on the UI thread. With `progress`, fn also gets on_progress
        (progress(done, total) follows on the UI thread) and should_stop (True once the job
        is cancelled or superseded)."""
        serial = next(self._serials)
        job = _Job(kind, Task(serial, fn, *args, reports=progress is not None, **kwargs), done, failed, progress)
        job.task.signals.done.connect(self._done)
        job.task.signals.failed.connect(self._failed)
        job.task.signals.progress.connect(self._progress)
        self._jobs[serial] = job
        if queued and kind in self._current:
            self._waiting.setdefault(kind, deque()).append(job)
            return
        self.drop(kind)
        self._launch(job)

    def running(self, kind: str) -> bool:
        """Whether a job of `kind` has an outcome still to deliver (running or queued)."""
        return kind in self._current or bool(self._waiting.get(kind))

    def cancel(self, kind: str) -> bool:
        """Ask the running job of `kind` to stop (a job started with `progress` stops at its
        next should_stop, and its outcome is delivered); False when none runs."""
        serial = self._current.get(kind)
        if serial is None:
            return False
        self._jobs[serial].task.cancel()
        return True

    def drop(self, kind: str) -> None:
        """Forget the jobs of `kind`: the running one is asked to stop, and whatever it
        returns or raises is never delivered; queued ones never start."""
        for job in self._waiting.pop(kind, ()):
            del self._jobs[job.task.serial]
        serial = self._current.pop(kind, None)
        if serial is not None:
            self._jobs[serial].task.cancel()

    def stop(self) -> None:
        """Cancel every job, forget the queued ones, and wait for the pool's threads to end
        (after its current batch or file, for an index or thumbnail run)."""
        for kind in list(self._waiting):
            for job in self._waiting.pop(kind):
                del self._jobs[job.task.serial]
        for serial in self._current.values():
            self._jobs[serial].task.cancel()
        self.pool.waitForDone()

    def _launch(self, job: _Job) -> None:
        self._current[job.kind] = job.task.serial
        self.pool.start(job.task)

    def _finish(self, serial: int) -> _Job | None:
        """The job, if its outcome is still wanted; the next queued job of its kind starts."""
        job = self._jobs.pop(serial)
        if self._current.get(job.kind) != serial:
            return None  # superseded
        del self._current[job.kind]
        waiting = self._waiting.get(job.kind)
        if waiting:
            self._launch(waiting.popleft())
        return job

    @Slot(int, object)
    def _done(self, serial: int, result: object) -> None:
        job = self._finish(serial)
        if job is not None:
            job.done(result)

    @Slot(int, str)
    def _failed(self, serial: int, message: str) -> None:
        job = self._finish(serial)
        if job is not None:
            job.failed(message)

    @Slot(int, int, int)
    def _progress(self, serial: int, done: int, total: int) -> None:
        job = self._jobs.get(serial)
        if job is not None and job.progress is not None and self._current.get(job.kind) == serial:
            job.progress(done, total)


def readable_error(exc: BaseException) -> str:
    """What a person can act on: ulip2's own errors say what to do; anything else is named
    as unexpected, with its traceback printed to stderr."""
    if isinstance(exc, Ulip2Error):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or 'file'}: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.Error):
        return f"the library file could not be read or written ({exc})"
    traceback.print_exception(exc, file=sys.stderr)
    return f"unexpected {type(exc).__name__}: {exc} (details printed to the terminal)"
