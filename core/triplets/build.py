"""Asset files -> triplet records, rendered and sampled in headless Blender workers.

Rendering and sampling run in bpy worker processes (core.blender_pool), one per slot so a
file that crashes Blender costs one worker, not the batch; with engine "ray" each work unit
is a Ray task running that same worker on a farm's nodes. Either way this process alone
writes the store: workers render into a folder, and it commits the record. Captioning is
core.triplets.caption's, once the views exist.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.blender_jobs import Answer, AssetsJob, RenderJob, failed
from core.blender_pool import Worker, run_jobs
from core.progress import OnProgress
from core.ray_tasks import blender_job, ray_map
from core.triplets.store import CAPTIONED, DONE, RecordWriter, TripletStore, key_for_asset, key_for_file

# With less room than this left on the store's disk after a job, its writes may have run out:
# a record at the default settings takes 0.7 MB in tmp/, and Blender writes a view that does
# not fit as an empty PNG while reporting it saved, so the job's answer alone cannot tell.
DISK_FULL_BELOW = 1 << 20
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Unit:
    """One job of a build and the record key it is for."""

    key: str
    job: AssetsJob | RenderJob


def run_units(store: TripletStore, units: list[Unit], *, engine: str, workers: int,
              timeout: float) -> Iterator[tuple[Unit, Answer, RecordWriter | None]]:
    """(unit, answer, record folder) per unit as they complete. A render job's views and
    points are in the record folder (in the store's tmp/), not yet committed."""
    if engine == "ray":
        yield from _run_ray(store, units, timeout)
        return

    def task(worker: Worker, unit: Unit):
        if not isinstance(unit.job, RenderJob):
            return worker.run(unit.job, timeout), None
        record = RecordWriter(store, unit.key)
        return worker.run(dataclasses.replace(unit.job, out=str(record.path)), timeout), record

    for unit, (answer, record) in run_jobs(units, workers=workers, timeout=timeout, log_dir=store.root / "logs",
                                           task=task):
        yield unit, answer, record


def _run_ray(store: TripletStore, units: list[Unit], timeout: float):
    by_job = {id(unit.job): unit for unit in units}
    for job, answer, lost in ray_map(blender_job, [unit.job for unit in units], timeout):
        unit = by_job[id(job)]
        if lost is not None:
            answer = failed(job, lost)
        record = None
        if isinstance(job, RenderJob):
            record = RecordWriter(store, unit.key)
            for name, data in answer.files.items():
                (record.path / name).write_bytes(data)
            answer.files = {}
        yield unit, answer, record


def plan_units(store: TripletStore, files: list[Path], *, engine: str, workers: int,
               timeout: float) -> tuple[list[Unit], int, set[str]]:
    """Work units still to do: (units, how many are stored already, keys that failed here).

    A file is one unit, except a .blend with objects marked as assets: each of those is
    one, keyed by key_for_asset. Workers list the marked assets of .blend files first.
    """
    state = store.state()
    stored = {key for key, event in state.items() if event.get("event") in (DONE, CAPTIONED)}
    keys = {path: key_for_file(path) for path in files}
    # A .blend stored as one record had no marked assets: no need to open it again.
    to_list = [p for p in files if p.suffix.lower() == ".blend" and keys[p] not in stored]
    listed: dict[str, list[str]] = {}
    failures = set()
    if to_list:
        listing = [Unit(keys[p], AssetsJob(str(p))) for p in to_list]
        for unit, answer, _ in run_units(store, listing, engine=engine, workers=workers, timeout=timeout):
            if answer.ok:
                listed[unit.job.path] = answer.names
            else:
                _check_room(store.root)
                store.fail(unit.key, unit.job.path, answer.reason)
                failures.add(unit.key)
    units, skipped, queued = [], 0, set()
    for path in files:
        if keys[path] in failures:
            continue
        for name in listed.get(str(path)) or [None]:
            key = keys[path] if name is None else key_for_asset(keys[path], name)
            if key in stored or key in queued:  # stored, or a duplicate file
                skipped += 1
                continue
            queued.add(key)
            units.append(Unit(key, RenderJob(str(path), object=name)))
    return units, skipped, failures


def render_files(store: TripletStore, files: list[Path], settings: dict, *, engine: str = "local", workers: int = 1,
                 timeout: float = 600, on_progress: OnProgress | None = None) -> dict:
    """Points and views of each file not stored yet, committed as it completes (a kill keeps
    what is done; a rerun skips it). {"skipped_done", "written", "failed": keys failed now}.

    settings: blender_addon.scene.render.ViewSettings fields. on_progress: (records done, to do),
    as core.progress says. A full disk raises OSError (ENOSPC); every committed record stays.
    """
    import numpy as np

    run = {"engine": engine, "workers": workers, "timeout": timeout}
    planned, skipped, failures = plan_units(store, files, **run)
    units = [Unit(u.key, dataclasses.replace(u.job, settings=settings)) for u in planned]
    if on_progress is not None:
        on_progress(0, len(units))
    for done, (unit, answer, record) in enumerate(run_units(store, units, **run), 1):
        try:
            _check_room(record.path)
            if answer.ok:
                record.commit(np.load(record.path / "points.npy"), answer.meta)
            else:
                store.fail(unit.key, unit.job.path, answer.reason)
                failures.add(unit.key)
        finally:
            record.discard()
        if on_progress is not None:
            on_progress(done, len(units))
    return {"skipped_done": skipped, "written": len(units) - len(failures & {u.key for u in units}),
            "failed": failures}


def disk_full(folder: Path) -> bool:
    return shutil.disk_usage(folder).free < DISK_FULL_BELOW


def _check_room(folder: Path) -> None:
    """Raise ENOSPC when the disk holding `folder` is full: a job that failed, or wrote, there
    then ran out of room, and what it made is not the file's doing."""
    if disk_full(folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
