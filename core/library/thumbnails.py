"""Thumbnails: a software-rasterised preview of an asset's sampled, coloured points, and
the step that replaces such previews with Blender renders.

`ulip2 index` keeps to its pace (tens of assets a second) by giving the files trimesh reads
this preview: pure numpy + Pillow (PNG encoding), run by the indexer's loaders next to the
sampler. The files only Blender reads (core.formats.BLENDER_FORMATS) are rendered there by the
Blender workers (Workbench, blender_addon.scene.render.thumbnail_settings, same size). Rendering
every other asset costs a Blender import and render each, so it is a step of its own,
`ulip2 thumbnails` (render_thumbnails): resumable, committed file by file.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.progress import OnProgress, ShouldStop, never
from core.sampling import NORMAL, RGB, XYZ

THUMBNAIL_SIZE = 128
_BACKGROUND = (236, 236, 236)
# A three-quarter view from above, the way assets are usually shown in a browser.
_AZIMUTH, _ELEVATION = np.radians(35.0), np.radians(25.0)
_LIGHT = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])


def _view_rotation() -> np.ndarray:
    """World -> camera: y up, the camera looking down -z after the rotation."""
    ca, sa, ce, se = np.cos(_AZIMUTH), np.sin(_AZIMUTH), np.cos(_ELEVATION), np.sin(_ELEVATION)
    yaw = np.array([[ca, 0, -sa], [0, 1, 0], [sa, 0, ca]])
    pitch = np.array([[1, 0, 0], [0, ce, -se], [0, se, ce]])
    return pitch @ yaw


def render_points(points: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of (N, 9) points (xyz on the unit sphere, rgb, normal):
    orthographic, painter's order (far points drawn first), 2x2 splats, lambert shading."""
    rotation = _view_rotation()
    xyz = points[:, XYZ].astype(np.float64) @ rotation.T
    normals = points[:, NORMAL].astype(np.float64) @ rotation.T
    # Normals face either way on open meshes; light the side facing the camera.
    shade = 0.45 + 0.55 * np.abs(normals @ (rotation @ _LIGHT))
    colour = np.clip(points[:, RGB] * shade[:, None], 0.0, 1.0)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = _BACKGROUND
    margin = 0.06 * size
    scale = (size - 2 * margin - 2) / 2.0  # xyz lies within the unit sphere
    col = np.clip((xyz[:, 0] * scale + size / 2).astype(np.int64), 0, size - 2)
    row = np.clip((size / 2 - xyz[:, 1] * scale).astype(np.int64), 0, size - 2)
    order = np.argsort(xyz[:, 2])  # camera looks down -z: larger z is nearer, drawn last
    rgb = (np.nan_to_num(colour[order]) * 255).astype(np.uint8)
    for dr in (0, 1):
        for dc in (0, 1):
            image[row[order] + dr, col[order] + dc] = rgb
    return image


def thumbnail_png(points: np.ndarray, size: int = THUMBNAIL_SIZE) -> bytes:
    """render_points encoded as PNG bytes (what the store keeps). Not `optimize`d: that makes
    a preview 5% smaller at ten times the cost (7.9 ms against 0.8 ms, where reading and
    sampling a small file takes about 5 ms)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(render_points(points, size), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def rendered_nothing(png: bytes) -> bool:
    """Whether a render shows nothing: every pixel transparent, or none differing from the
    background. Blender writes such a PNG and reports success when its importer reads a file
    as geometry without area (an OBJ in UTF-16 becomes vertices all at the origin)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGBA")
    low, high = zip(*image.getextrema())
    return high[3] == 0 or low == high


def _nothing_reason(path: str, objects: list[str]) -> str:
    what = os.path.basename(path) if objects == [""] else f"{', '.join(map(repr, objects))} in {os.path.basename(path)}"
    return (f"rendered nothing: {what} shows nothing once Blender imports it (Blender reads it otherwise than "
            "ulip2 index did); import it in Blender to check, and save it again, e.g. as .glb; its thumbnail stays")


@dataclass
class ThumbnailReport:
    rendered: int = 0  # assets whose thumbnail is now a Blender render
    failed: list[dict] = field(default_factory=list)  # {path, reason}: their point previews stay
    cancelled: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def render_thumbnails(library, *, workers: int | None = None, redo: bool = False,
                      on_progress: OnProgress | None = None, should_stop: ShouldStop = never,
                      timeout: float | None = None) -> ThumbnailReport:
    """Replace the point previews of `library` (a core.library.store.Library) with Blender
    renders, file by file through the crash-isolated Blender workers; each file's renders are
    committed as soon as they come, so a stopped run keeps them and the next resumes.

    workers: Blender worker processes (default: one per CPU).
    redo: render every asset again, renders included.
    on_progress, should_stop: as core.progress says, in assets: (assets done, assets to
        render) before the first file and after each file's commit; should_stop is asked
        after each file, and True ends the run there.
    A file that fails (Blender cannot import it, it crashed or hung, its render is empty, the
    file changed since indexing) keeps its previews and is listed with the reason; the next run tries it again.
    """
    from core.blender_jobs import ThumbnailsAnswer, ThumbnailsJob, failed
    from core.blender_pool import BLENDER_TIMEOUT_S, NEEDS_BLENDER, blender_available, run_jobs
    from core.library.store import LibraryError
    from core.paths import file_sha256

    if not blender_available():
        raise LibraryError(f"rendering thumbnails {NEEDS_BLENDER} (the point previews stay as they are)")
    started = time.perf_counter()
    report = ThumbnailReport()
    files: dict[str, list[dict]] = {}
    for row in library.unrendered(redo=redo):  # every format renders (core.formats)
        files.setdefault(row["path"], []).append(row)
    jobs = [ThumbnailsJob(path, tuple(r["object"] for r in rows), THUMBNAIL_SIZE) for path, rows in files.items()]
    total, done = sum(len(rows) for rows in files.values()), 0
    timeout = BLENDER_TIMEOUT_S if timeout is None else timeout

    def render(worker, job: ThumbnailsJob) -> ThumbnailsAnswer:
        # Runs in the worker's thread, so the hashing of one file overlaps another's render.
        try:
            if file_sha256(job.path) != files[job.path][0]["sha256"]:
                return failed(job, "changed since it was indexed: run ulip2 index, then this again")
        except OSError as exc:
            return failed(job, f"cannot read: {exc.strerror or exc} (ulip2 index drops a deleted file)")
        return worker.run(job, timeout)

    if on_progress is not None:
        on_progress(0, total)
    with tempfile.TemporaryDirectory(prefix="ulip2-thumbnails-") as logs:
        for job, answer in run_jobs(jobs, workers=workers, timeout=timeout, log_dir=Path(logs), task=render):
            rows = files[job.path]
            reason = None if answer.ok else answer.reason
            if reason is None:
                pngs = {r["id"]: base64.b64decode(answer.thumbnails[r["object"]]) for r in rows}
                blank = [r for r in rows if rendered_nothing(pngs[r["id"]])]
                for r in blank:
                    del pngs[r["id"]]  # an empty render is no thumbnail: the one it had stays
                stored = library.set_rendered_thumbnails(rows[0]["sha256"], pngs)
                report.rendered += stored
                if blank:
                    reason = _nothing_reason(job.path, [r["object"] for r in blank])
                elif stored < len(rows):
                    reason = "re-indexed while it was rendering: run this again"
            if reason is not None:
                report.failed.append({"path": job.path, "reason": reason})
                print(f"error: {job.path}: {reason}", file=sys.stderr)
            done += len(rows)
            if on_progress is not None:
                on_progress(done, total)
            if should_stop():
                report.cancelled = done < total
                break
    report.seconds = round(time.perf_counter() - started, 3)
    return report
