"""What a ulip2 process asks a headless Blender worker, and what the worker answers: one
dataclass per job and per answer, sent as one JSON line each way. core.blender_pool sends
them, blender_addon/headless/worker.py runs them; nobody builds the dicts by hand. Standard library
only (the worker imports it inside Blender's Python).

    AssetsJob(path)                      -> AssetsAnswer(names): the objects marked as
                                            assets in a .blend (with geometry); [] for any
                                            other file, which is one asset as a whole
    RenderJob(path, out, object, ...)    -> RenderAnswer(meta): views and points.npy are
                                            written into the folder `out`; the parent
                                            commits them as a triplet record
    PointsJob(path, num_points, ...)     -> PointsAnswer(assets): each asset's points
                                            (y-up) and optional thumbnail, for the index
    ThumbnailsJob(path, objects, size)   -> ThumbnailsAnswer(thumbnails): a render per asset
    TagJob(source, out, bundle, ...)     -> TagAnswer(labelled, skipped): `ulip2 blender
                                            tag`'s child (blender_addon/headless/tag_file.py),
                                            one job given on its command line

A job that fails answers ok=False with the reason, which names what went wrong with the
file; a worker that crashes or hangs is answered for by the pool in the same form.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class Answer:
    ok: bool = True
    reason: str | None = None  # why the job failed, when it did

    def to_line(self) -> str:
        return json.dumps(dataclasses.asdict(self))


@dataclass
class AssetsAnswer(Answer):
    names: list[str] = field(default_factory=list)


@dataclass
class RenderAnswer(Answer):
    meta: dict = field(default_factory=dict)  # the triplet record's fields
    # The record's files, where the parent cannot see the worker's disk (a Ray node); never sent as JSON.
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class SampledAsset:
    object: str  # the marked asset's name; "" for a whole file
    points: str  # base64 of float32 (num_points, 9): xyz, rgb, normal, y-up
    thumbnail: str | None = None  # base64 PNG

    def point_array(self, num_points: int):
        import numpy as np

        return np.frombuffer(base64.b64decode(self.points), np.float32).reshape(num_points, -1)


@dataclass
class PointsAnswer(Answer):
    assets: list[SampledAsset] = field(default_factory=list)

    def __post_init__(self):
        self.assets = [a if isinstance(a, SampledAsset) else SampledAsset(**a) for a in self.assets]


@dataclass
class ThumbnailsAnswer(Answer):
    thumbnails: dict[str, str] = field(default_factory=dict)  # asset name ("" for a whole file) -> base64 PNG


@dataclass
class TagAnswer(Answer):
    labelled: dict[str, dict] = field(default_factory=dict)  # object -> {"tags": [[label, score]], "caption"}
    skipped: list[str] = field(default_factory=list)  # objects with no surface to sample


@dataclass(frozen=True)
class AssetsJob:
    action: ClassVar[str] = "assets"
    answer: ClassVar[type[Answer]] = AssetsAnswer
    path: str


@dataclass(frozen=True)
class RenderJob:
    action: ClassVar[str] = "render"
    answer: ClassVar[type[Answer]] = RenderAnswer
    path: str
    object: str | None = None  # a marked asset's name; None: all of the file's renderable objects
    out: str = ""  # the folder to write into, set by whoever runs the job
    settings: dict = field(default_factory=dict)  # blender_addon.scene.render.ViewSettings fields
    seed: int = 0


@dataclass(frozen=True)
class PointsJob:
    action: ClassVar[str] = "points"
    answer: ClassVar[type[Answer]] = PointsAnswer
    path: str
    num_points: int
    seed: int = 0
    thumbnail: int = 0  # thumbnail size in pixels; 0: none


@dataclass(frozen=True)
class ThumbnailsJob:
    action: ClassVar[str] = "thumbnails"
    answer: ClassVar[type[Answer]] = ThumbnailsAnswer
    path: str
    objects: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class TagJob:
    action: ClassVar[str] = "tag"
    answer: ClassVar[type[Answer]] = TagAnswer
    source: str  # the .blend to tag (never written)
    out: str  # the .blend to write, whole or not at all
    bundle: str
    device: str
    vocabulary: str
    k: int
    all_objects: bool
    parent: int  # the pid the child ends with


JOBS = {job.action: job for job in (AssetsJob, RenderJob, PointsJob, ThumbnailsJob, TagJob)}


def job_line(job) -> str:
    """The JSON line that asks for `job`."""
    return json.dumps({"action": job.action, **dataclasses.asdict(job)})


def read_job(line: str):
    """The job a JSON line asks for (the worker's side of job_line)."""
    fields = json.loads(line)
    return JOBS[fields.pop("action")](**fields)


def read_answer(job, line: str) -> Answer:
    """The answer to `job` in a JSON line (the pool's side of Answer.to_line)."""
    return job.answer(**json.loads(line))


def failed(job, reason: str) -> Answer:
    """An answer that says `job` failed, and why."""
    return job.answer(ok=False, reason=reason)
