"""Work as Ray tasks, for `--engine ray`: on the cluster $RAY_ADDRESS names, else on a local
Ray started (and stopped) here; a Ray the caller started is used and left running. Each
task takes one CPU and is not retried (a file that kills its worker would only kill the
next one too); this process alone writes what they return."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from core.blender_jobs import Answer, RenderJob
from core.blender_pool import Worker
from core.errors import Ulip2Error

T = TypeVar("T")
R = TypeVar("R")
#: Results in flight per cluster CPU (each may hold a record's views and points in memory).
IN_FLIGHT_PER_CPU = 2


def ray_map(function: Callable[..., R], items: Sequence[T], *args) -> Iterator[tuple[T, R | None, str | None]]:
    """(item, function(item, *args), None) per item as its task ends, in the order they end;
    (item, None, reason) for a task Ray lost (its node or worker died)."""
    try:
        import ray
    except ImportError:
        raise Ulip2Error("--engine ray needs the ray extra: pip install 'ulip2[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(function)
        limit = max(1, int(ray.cluster_resources().get("CPU", 1)) * IN_FLIGHT_PER_CPU)
        waiting = list(reversed(items))
        running: dict = {}
        while waiting or running:
            while waiting and len(running) < limit:
                item = waiting.pop()
                running[remote.remote(item, *args)] = item
            (ref,), _ = ray.wait(list(running), num_returns=1)
            item = running.pop(ref)
            try:
                yield item, ray.get(ref), None
            except ray.exceptions.RayError as exc:
                yield item, None, f"Ray task failed: {str(exc).strip().splitlines()[0][:300]}"
    finally:
        if started:
            ray.shutdown()


def blender_job(job, timeout: float) -> Answer:
    """One Blender job in a fresh worker on a Ray node; a render job's files come back in the
    answer (the node may not see the store), as RenderAnswer.files."""
    with tempfile.TemporaryDirectory(prefix="ulip2-ray-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        worker = Worker(Path(tmp) / "worker.log")
        rendering = isinstance(job, RenderJob)
        try:
            answer = worker.run(dataclasses.replace(job, out=str(out)) if rendering else job, timeout)
        finally:
            worker.close()
        if answer.ok and rendering:
            answer.files = {p.name: p.read_bytes() for p in out.iterdir()}
        return answer
