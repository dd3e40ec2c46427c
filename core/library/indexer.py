"""Index asset folders into a library: walk, skip what is unchanged, load ahead of the
encoder, embed in batches, commit batch by batch.

A file is work when it is new, its size or mtime changed and its content hash did too,
or it has no embedding from the current bundle. Loading (hash, read, sample, thumbnail)
runs ahead of the encoder, a few batches at most, so the two overlap. On two cores or fewer
it runs in one loader thread of this process: onnxruntime and numpy release the GIL, so the
thread loads while a batch encodes, where loader processes took the cores the encoder's
threads run on, and started by importing trimesh each (about a second, longer than a
hundred small files take). With more cores it runs in cpu_count - 1 loader processes
(trimesh parsing holds the GIL), one core left to the encoder. The formats only Blender
reads (core.formats) go to the crash-isolated Blender workers instead (core.blender_pool),
which sample with the same sampler and render the thumbnail. Encoding runs here with
onnxruntime in batches. Each batch is one transaction, so killing the run at any moment
keeps every batch before it and the next run picks up the rest.

A file is one asset, except a .blend with objects marked as assets: each of those is an
asset of its own (the library tells them apart by object name), written in one batch.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

import numpy as np

from core.blender_jobs import PointsJob, failed
from core.blender_pool import BLENDER_TIMEOUT_S, NEEDS_BLENDER, blender_available, run_jobs
from core.errors import AssetError, Ulip2Error
from core.library.keys import bundle_id  # noqa: F401 (callers import it from here too)
from core.library.store import BLENDER, FILE_FAULT, POINTS, RUN_FAULT, AssetRecord, Library
from core.formats import find_assets, needs_blender, states_frame, unreadable
from core.meshio import load_points
from core.paths import NOT_UTF8_NAME, file_sha256, not_utf8_name
from core.processes import end_with
from core.progress import OnProgress, ShouldStop, never
from core.ray_tasks import blender_job, ray_map

# Fewer jobs than this are loaded in-process: starting a pool costs more than it saves.
_POOL_MIN_JOBS = 8
# Up to this many cores, files load in a thread of this process, not in loader processes.
_FEW_CORES = 2
# Reading a file fails so when this machine runs short (memory, open files), not the file.
_SYSTEM_ERRNOS = {errno.ENOMEM, errno.EMFILE, errno.ENFILE}
# In a Blender worker's reason (core.blender_pool, blender_addon.headless.worker), what says the run
# failed, not the file: the system killed the worker (the kernel's out-of-memory killer sends
# SIGKILL; a file that crashes Blender ends it with SIGSEGV or SIGABRT), or memory or disk
# ran out inside it.
_RUN_FAULT_SIGNS = (f"(signal {signal.SIGKILL.name})", MemoryError.__name__, os.strerror(errno.ENOSPC))


@dataclass(frozen=True)
class _Job:
    path: str
    known_sha: str | None  # content hash on record, when the file was indexed before
    embedded: bool  # an embedding from the current bundle exists
    num_points: int
    seed: int
    thumbnails: bool


@dataclass
class _Asset:
    object: str  # the marked object's name in a .blend; "" for a whole file
    points: np.ndarray
    thumbnail: bytes | None


@dataclass
class _Loaded:
    path: str
    size: int
    mtime_ns: int
    sha256: str = ""
    assets: list[_Asset] = field(default_factory=list)
    error: str | None = None  # set when the file cannot become points
    fault: str = FILE_FAULT  # whose fault `error` is: RUN_FAULT ones are retried by the next run

    @property
    def unchanged(self) -> bool:
        return not self.assets and self.error is None


def _hashed(job: _Job) -> tuple[_Loaded, bool]:
    """(the file's facts, whether its content needs loading)."""
    try:
        stat = os.stat(job.path)
        out = _Loaded(job.path, stat.st_size, stat.st_mtime_ns)
        out.sha256 = file_sha256(job.path)
    except OSError as exc:
        return _Loaded(job.path, 0, 0, error=f"cannot read: {exc.strerror or exc}",
                       fault=RUN_FAULT if exc.errno in _SYSTEM_ERRNOS else FILE_FAULT), False
    # Same hash: touched, not changed (a copy, a checkout, a save without edits).
    return out, not (out.sha256 == job.known_sha and job.embedded)


def _load(job: _Job) -> _Loaded:
    """Hash, then (if the content is new to the store) read, sample and preview one file.
    Runs in a loader process; every failure becomes a reason, never an exception."""
    out, new = _hashed(job)
    if not new:
        return out
    try:
        points = load_points(job.path, job.num_points, seed=job.seed)
        thumbnail = None
        if job.thumbnails:
            from core.library.thumbnails import thumbnail_png

            thumbnail = thumbnail_png(points)
        out.assets = [_Asset("", points, thumbnail)]
    except AssetError as exc:
        out.error = exc.reason
    except MemoryError:
        out.error, out.fault = "out of memory while loading (too many faces or too large a texture?)", RUN_FAULT
    except Exception as exc:  # a loader bug on one odd file must not stop a library-wide run
        # ulip2's fault until shown otherwise: retried, so a fixed ulip2 reads the file.
        out.error, out.fault = f"unexpected {type(exc).__name__} while loading: {str(exc)[:200]}", RUN_FAULT
    return out


def _blender_loaded(jobs: list[_Job], workers: int | None, timeout: float, engine: str) -> Iterator[_Loaded]:
    """_load for the files only Blender reads, through the Blender workers (a local pool, or
    one fresh worker per Ray task): each answers with every asset of its file (points
    sampled by core's sampler, a rendered thumbnail)."""
    if not jobs:
        return
    new = []
    for job in jobs:
        out, needed = _hashed(job)
        if needed and out.error is None and not blender_available():
            out.error, out.fault = NEEDS_BLENDER, RUN_FAULT  # read once the extra is installed
        if not needed or out.error is not None:
            yield out
        else:
            new.append((job, out))
    if not new:
        return
    from core.library.thumbnails import THUMBNAIL_SIZE

    loaded = {job.path: out for job, out in new}
    requests = [PointsJob(job.path, job.num_points, job.seed, THUMBNAIL_SIZE if job.thumbnails else 0)
                for job, _ in new]
    with tempfile.TemporaryDirectory(prefix="ulip2-index-") as logs:
        answers = (run_jobs(requests, workers=workers, timeout=timeout, log_dir=Path(logs)) if engine == "local" else
                   ((job, answer if lost is None else failed(job, lost))
                    for job, answer, lost in ray_map(blender_job, requests, timeout)))
        for request, answer in answers:
            out = loaded.pop(request.path)
            if not answer.ok:
                out.error = answer.reason
                out.fault = RUN_FAULT if any(sign in out.error for sign in _RUN_FAULT_SIGNS) else FILE_FAULT
            else:
                out.assets = [_Asset(a.object, a.point_array(request.num_points),
                                     base64.b64decode(a.thumbnail) if a.thumbnail else None)
                              for a in answer.assets]
            yield out


@dataclass
class IndexReport:
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[dict] = field(default_factory=list)  # {path, reason, fault} of this run
    known_errors: int = 0  # unchanged files that failed before by their own fault (skipped)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def index_paths(roots: Sequence[str | os.PathLike], library: Library, encoder, *, batch_size: int = 16,
                workers: int | None = None, seed: int = 0, thumbnails: bool = True,
                on_progress: OnProgress | None = None, should_stop: ShouldStop = never,
                blender_timeout: float = BLENDER_TIMEOUT_S, retry_failed: bool = False,
                engine: str = "local") -> IndexReport:
    """Bring `library` up to date with the asset files under `roots`, embedding with
    `encoder` (a core.runtime.PointEncoder). Returns what was done.

    workers: loader processes (default: none on two cores or fewer, where one thread of this
        process loads while the encoder runs, else one per core but one; 0 loads in this
        process), and as many Blender workers (at least one; default one per core) for the
        files only Blender reads.
    added and updated count assets (a .blend may hold several); seen counts files.
    on_progress, should_stop: as core.progress says, in files: (files processed, files to
        process) before the first batch and after each commit; should_stop is asked after
        each commit, and True ends the run there (every committed batch stays, and the next
        run resumes with the rest).
    retry_failed: read again the unchanged files that failed by their own fault (skipped
        otherwise; those that failed by the run's are always retried).
    engine: "local", or "ray": each file is read (hashed, sampled, previewed; through a
        fresh Blender worker for Blender's formats) by a Ray task, on the cluster $RAY_ADDRESS
        names or a local Ray (core.ray_tasks); this process alone encodes and writes, as with
        "local", so a library outgrows one machine's loading, not its one writer.
    """
    if engine not in ("local", "ray"):
        raise Ulip2Error(f"engine {engine!r}: choose local or ray")
    started = time.perf_counter()
    report = IndexReport()
    bundle = bundle_id(encoder.bundle)
    space = encoder.bundle.space
    roots = [os.path.abspath(os.fspath(r)) for r in roots]
    paths = find_assets(roots)
    report.seen = len(paths)
    # A name that is not UTF-8 (latin-1 from an old archive) cannot be stored as text: it
    # is reported on every run, by a readable form of its name, and the rest goes on.
    shown = {p: not_utf8_name(p) for p in paths}
    paths = [p for p, name in shown.items() if name is None]
    for name in (name for name in shown.values() if name is not None):
        report.failed.append({"path": name, "reason": NOT_UTF8_NAME, "fault": FILE_FAULT})
        print(f"error: {name}: {NOT_UTF8_NAME}", file=sys.stderr)
    # Deletions first: a run killed later still leaves no row for a file that is gone.
    report.removed = library.drop_missing(roots, set(paths))

    known = library.known(paths, bundle)
    jobs = []
    irregular = []  # FIFOs, devices, links to them: reading one could block forever
    for path in paths:
        k = known.get(path)
        try:
            stat = os.stat(path)
        except OSError:
            continue  # vanished between walk and stat: the next run drops it
        if k is not None and (k.size, k.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            if k.sha256 is None and k.fault == FILE_FAULT and not retry_failed:
                report.known_errors += 1
                continue
            if k.embedded:
                report.unchanged += 1
                continue
        if not S_ISREG(stat.st_mode):
            irregular.append((path, stat.st_size, stat.st_mtime_ns, unreadable(path, stat.st_mode), FILE_FAULT))
            continue
        jobs.append(_Job(path, None if k is None else k.sha256, k is not None and k.embedded,
                         encoder.num_points, seed, thumbnails))
    previously_indexed = {p for p, k in known.items() if k.sha256 is not None}

    records: list[AssetRecord] = []
    points: list[np.ndarray] = []
    touched: list[tuple[str, int, int]] = []
    failed: list[tuple[str, int, int, str, str]] = irregular  # recorded with the first batch
    done = files = 0  # files processed, files in the batch being gathered

    def flush() -> None:
        nonlocal done, files
        if not (records or touched or failed):
            return  # nothing since the last commit (a stop right after one, a run's end)
        if points:
            vectors = encoder.embed_points(np.stack(points), batch_size=batch_size,
                                           frame_known=[states_frame(record.path) for record in records])
            for record, vec in zip(records, vectors):
                record.vec = vec
        library.write_batch(bundle, space, records, touched, failed)
        for record in records:
            if record.path in previously_indexed:
                report.updated += 1
            else:
                report.added += 1
        report.unchanged += len(touched)
        report.failed += [{"path": p, "reason": r, "fault": f} for p, _, _, r, f in failed]
        done, files = done + files, 0
        for pending in (records, points, touched, failed):
            pending.clear()
        if on_progress is not None:
            on_progress(done, len(jobs))

    if on_progress is not None:
        on_progress(0, len(jobs))
    in_blender = [job for job in jobs if needs_blender(job.path)]
    in_trimesh = [job for job in jobs if not needs_blender(job.path)]
    # Loading runs ahead of the encoder by two batches: one loads while the other encodes.
    loaded = _all_loaded(in_trimesh, in_blender, workers, ahead=2 * batch_size, blender_timeout=blender_timeout,
                         engine=engine)
    with contextlib.closing(loaded):  # a stopped run cancels the loads it will not use
        for item in loaded:
            files += 1
            if item.error is not None:
                failed.append((item.path, item.size, item.mtime_ns, item.error, item.fault))
                retried = " (not the file's fault: the next run reads it again)" if item.fault == RUN_FAULT else ""
                print(f"error: {item.path}: {item.error}{retried}", file=sys.stderr)
            elif item.unchanged:
                touched.append((item.path, item.size, item.mtime_ns))
            else:
                # The Blender workers render the thumbnails of what they read; the rest are point previews.
                source = BLENDER if needs_blender(item.path) else POINTS
                for asset in item.assets:  # a file's assets always land in the same batch
                    records.append(AssetRecord(item.path, item.size, item.mtime_ns, item.sha256, None,
                                               asset.thumbnail, asset.object, source))
                    points.append(asset.points)
            if len(records) + len(touched) + len(failed) >= batch_size:
                flush()
                if should_stop():
                    break
        flush()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _all_loaded(in_trimesh: list[_Job], in_blender: list[_Job], workers: int | None, *, ahead: int,
                blender_timeout: float, engine: str) -> Iterator[_Loaded]:
    if engine == "ray":
        for job, out, lost in ray_map(_load, in_trimesh):
            yield out if lost is None else _Loaded(job.path, 0, 0, error=lost, fault=RUN_FAULT)
    else:
        yield from _loaded(in_trimesh, workers, ahead)
    yield from _blender_loaded(in_blender, workers, blender_timeout, engine)


def _loader_processes(workers: int | None, jobs: int) -> int:
    """How many loader processes load `jobs` files (0: one loader thread of this process).

    workers None: none on two cores or fewer. There the encoder's onnxruntime threads take
    both cores, a loader thread overlaps them (the encoder and numpy release the GIL), and a
    pool's start (each worker imports trimesh, about a second) costs more than it saves:
    `python bench/index.py --assets 120` indexes at 0.81x the one-file-at-a-time loop with two
    loader processes and at 1.15x with the thread. With more cores (not measured here), one
    per core but one, the one left to the encoder and the commits."""
    if workers is None:
        cores = os.cpu_count() or 1
        workers = cores - 1 if cores > _FEW_CORES else 0
    return workers if workers > 0 and jobs >= _POOL_MIN_JOBS else 0


def _loaded(jobs: list[_Job], workers: int | None, ahead: int) -> Iterator[_Loaded]:
    """_load over `jobs`, in order, at most `ahead` files ahead of the caller (memory holds
    a few batches of points, not the whole library): in loader processes, or in a thread of
    this process (_loader_processes says which), so loading overlaps the caller's encoding."""
    if not jobs:
        return
    processes = _loader_processes(workers, len(jobs))
    if processes == 0:
        pool: Executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ulip2-loader")
    else:
        import multiprocessing

        # forkserver: workers start from a clean process, not a fork of one holding
        # onnxruntime's threads (forking a multithreaded process can deadlock).
        context = multiprocessing.get_context("forkserver")
        # end_with: a kill -9 of this process must not leave the workers (and through their
        # pipes the forkserver and resource tracker) waiting for good.
        pool = ProcessPoolExecutor(max_workers=processes, mp_context=context,
                                   initializer=end_with, initargs=(os.getpid(),))
        ahead = max(ahead, 8 * processes)  # enough queued that no worker waits on a pipe
    try:
        yield from _bounded_map(pool, jobs, ahead=max(1, ahead))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a stopped run loads no more


def _bounded_map(pool: Executor, jobs: list[_Job], ahead: int) -> Iterator[_Loaded]:
    pending: deque = deque()
    queue = iter(jobs)
    for job in queue:
        pending.append(pool.submit(_load, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
