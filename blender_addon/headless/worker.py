"""Headless bpy worker: `python -m blender_addon.headless.worker` (core.blender_pool starts these).

Reads one job per line on stdin and answers each with one line, both as core.blender_jobs
writes them (AssetsJob, RenderJob, PointsJob, ThumbnailsJob and their answers).

Blender prints its own progress on stdout, so the answers go to the stdout the parent
reads and everything else is moved to stderr. A file that crashes Blender kills only this
process; the parent answers for it and starts a new worker.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import traceback
from pathlib import Path

import bpy
import numpy as np

from core.blender_jobs import (Answer, AssetsAnswer, AssetsJob, PointsAnswer, PointsJob, RenderAnswer, RenderJob,
                               SampledAsset, ThumbnailsAnswer, ThumbnailsJob, failed, read_job)
from core.errors import AssetError
from core.processes import end_with
from core.references import check_references, refuse_outside
from core.sampling import DEFAULT_GREY

from ..scene.extract import GEOMETRY_TYPES
from ..scene.importers import IMPORTERS, import_file
from ..scene.render import ViewSettings, render_thumbnail
from ..scene.triplets import geometry_of, render_triplet


def _last_line(exc: Exception) -> str:
    """An operator error's last line: the importer's own exception, not bpy's "Location:" after it."""
    lines = [line for line in str(exc).strip().splitlines() if not line.startswith("Location:")]
    return lines[-1] if lines else type(exc).__name__


def _let_fbx_lights_import() -> None:
    """bpy 5.0's FBX importer sets each light's Cycles cast_shadow, which Cycles no longer has
    (AttributeError: every FBX file with a light failed): give it that setting back, unused
    (light.use_shadow holds the file's value). Factory settings drop it, so before each import."""
    settings = bpy.types.Light.bl_rna.properties["cycles"].fixed_type
    if "cast_shadow" not in settings.properties:
        from cycles.properties import CyclesLightSettings

        CyclesLightSettings.cast_shadow = bpy.props.BoolProperty()


def load_asset(path: Path) -> list:
    """Open or import `path` into an empty Blender; its renderable top-level objects.
    Nothing of the file runs (no text blocks, no Python drivers), and a file that names
    another outside its own folder is refused, before Blender reads it where it can be told."""
    check_references(path)
    if path.suffix.lower() == ".blend":
        try:
            bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False, use_scripts=False)
        except RuntimeError as exc:
            raise AssetError(path, f"Blender could not open it: {_last_line(exc)}") from None
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        if path.suffix.lower() == ".fbx":
            _let_fbx_lights_import()
        try:
            result = _import(path)
        except RuntimeError as exc:  # importers report bad files as operator errors
            raise AssetError(path, f"Blender could not import it: {_last_line(exc)}") from None
        if "FINISHED" not in result:
            raise AssetError(path, f"Blender's importer gave up ({', '.join(result)})")
        if path.suffix.lower() == ".obj":
            _grey_undefined_materials(path)
    _refuse_outside_files(path)
    # Every object the file's scene renders (instancers bring their instances along).
    return [obj for obj in bpy.context.scene.objects if not obj.hide_render]


def _import(path: Path) -> set[str]:
    """Blender's importer of `path`'s format; trimesh's formats it has none for (.off, .dae)
    come in as the glTF of the mesh trimesh reads (core.meshio.as_glb), so they render as
    they are indexed."""
    if path.suffix.lower() in IMPORTERS:
        return import_file(path)
    from core.meshio import as_glb  # trimesh: the ulip2 environment's worker only

    with tempfile.TemporaryDirectory(prefix="ulip2-convert-") as tmp:
        converted = Path(tmp) / f"{path.stem}.glb"
        converted.write_bytes(as_glb(path))
        return import_file(converted)


def _refuse_outside_files(path: Path) -> None:
    """What only Blender knows the file names (a .blend's linked libraries and images, an
    FBX's or USD's textures) must lie in its folder too: checked before anything is read
    from them into points or views (Blender loads images when it first draws them)."""
    refuse_outside(path, bpy.utils.blend_paths(absolute=True, packed=False, local=False), "refer to it by a "
                   "relative name, or pack it into the .blend")


def _undefined_obj_materials(path: Path) -> set[str]:
    """Material names an OBJ uses (usemtl) that none of its material libraries defines."""
    used, defined = set(), set()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("usemtl "):
            used.add(line[7:].strip())
        elif line.startswith("mtllib "):
            names = line[7:].strip()
            for library in [names] if (path.parent / names).is_file() else names.split():
                if (path.parent / library).is_file():
                    defined |= {m[7:].strip() for m in (path.parent / library).read_text(errors="replace").splitlines()
                                if m.startswith("newmtl ")}
    return used - defined


def _grey_undefined_materials(path: Path) -> None:
    """Blender's OBJ importer makes a material it cannot find its default 0.8 grey; trimesh
    (`ulip2 eval`, `ulip2 index`) gives such faces ULIP-2's colourless grey. Use the latter,
    so the file has one look in renders and points whichever reads it."""
    for name in _undefined_obj_materials(path):
        material = bpy.data.materials.get(name)
        node = material.node_tree.nodes.get("Principled BSDF") if material and material.node_tree else None
        if node is not None:
            node.inputs["Base Color"].default_value = (DEFAULT_GREY, DEFAULT_GREY, DEFAULT_GREY, 1.0)


def marked_assets() -> list:
    """Objects of the open file marked as assets that have geometry, by name. Marked
    lights, cameras and empties that instance nothing are not 3D shapes, so not assets here."""
    return sorted((obj for obj in bpy.data.objects if obj.asset_data is not None and
                   (obj.type in GEOMETRY_TYPES or (obj.instance_type == "COLLECTION" and obj.instance_collection))),
                  key=lambda obj: obj.name)


def show(obj) -> None:
    """Put a marked asset in the evaluated scene and the render, whatever its visibility in
    the file (assets often live outside the scene, or hidden): only this process's copy changes."""
    scene = bpy.context.scene
    if obj.name not in scene.collection.objects:
        scene.collection.objects.link(obj)
    obj.hide_render = obj.hide_viewport = False
    obj.hide_set(False)


def units(path: Path, only: str | None = None) -> list[tuple[str, list]]:
    """(asset name, objects) per asset of `path`: each marked asset, or ("", all) when none
    is marked. only: just that marked asset."""
    objects = load_asset(path)
    marked = marked_assets() if path.suffix.lower() == ".blend" else []
    if only is not None:
        marked = [obj for obj in marked if obj.name == only]
        if not marked:
            raise AssetError(path, f"no object {only!r} marked as an asset with geometry (the file changed?)")
    if not marked:
        return [("", objects)]
    for obj in marked:
        show(obj)
    return [(obj.name, [obj]) for obj in marked]


def render_job(job: RenderJob) -> RenderAnswer:
    path = Path(job.path)
    ((name, objects),) = units(path, job.object)
    geometry = geometry_of(objects, source=str(path), name=name or path.stem)
    points, meta = render_triplet(job.out, objects, geometry, settings=ViewSettings(**job.settings),
                                  source=str(path), name=name or path.stem, kind="asset" if name else "file",
                                  seed=job.seed)
    np.save(Path(job.out) / "points.npy", points)
    return RenderAnswer(meta=meta)


def thumbnail_png(objects, geometry, size: int) -> str:
    """The library thumbnail of `objects` (render.thumbnail_settings) as base64 PNG."""
    with tempfile.TemporaryDirectory(prefix="ulip2-thumbnail-") as tmp:
        png = Path(tmp) / "thumbnail.png"
        render_thumbnail(objects, geometry.world_vertices, str(png), size)
        return base64.b64encode(png.read_bytes()).decode()


def points_job(job: PointsJob) -> PointsAnswer:
    path = Path(job.path)
    assets = []
    for name, objects in units(path):
        geometry = geometry_of(objects, source=str(path), name=name or path.stem)
        points = geometry.points(job.num_points, job.seed)
        thumbnail = thumbnail_png(objects, geometry, job.thumbnail) if job.thumbnail else None
        assets.append(SampledAsset(name, base64.b64encode(points.tobytes()).decode(), thumbnail))
    return PointsAnswer(assets=assets)


def thumbnails_job(job: ThumbnailsJob) -> ThumbnailsAnswer:
    path = Path(job.path)
    wanted, rendered = set(job.objects), {}
    for name, objects in units(path):
        if name in wanted:
            geometry = geometry_of(objects, source=str(path), name=name or path.stem)
            rendered[name] = thumbnail_png(objects, geometry, job.size)
    missing = sorted(wanted - set(rendered))
    if missing:
        what = f"no asset {missing[0]!r}" if missing[0] else "marked assets instead of one whole-file asset"
        raise AssetError(path, f"{what} in it now (it changed since indexing: run ulip2 index first)")
    return ThumbnailsAnswer(thumbnails=rendered)


def assets_job(job: AssetsJob) -> AssetsAnswer:
    path = Path(job.path)
    if path.suffix.lower() != ".blend":
        return AssetsAnswer(names=[])
    load_asset(path)
    return AssetsAnswer(names=[obj.name for obj in marked_assets()])


RUNS = {AssetsJob: assets_job, RenderJob: render_job, PointsJob: points_job, ThumbnailsJob: thumbnails_job}


def run_job(job) -> Answer:
    try:
        return RUNS[type(job)](job)
    except AssetError as exc:
        return failed(job, exc.reason)
    except Exception as exc:  # any other Python error in this file must not stop the batch
        traceback.print_exc()
        return failed(job, f"{type(exc).__name__}: {exc}")


def main() -> None:
    if "--parent" in sys.argv:  # started by core.blender_pool: end with it, even by kill -9
        end_with(int(sys.argv[sys.argv.index("--parent") + 1]))
    # Off by default in bpy; said here so no setting or file can turn it on for this process.
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Blender's C code prints to fd 1: send it to the log, not the parent
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if line.strip():
            answers.write(run_job(read_job(line)).to_line() + "\n")


if __name__ == "__main__":
    main()
