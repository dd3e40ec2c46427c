"""Auto-tag a .blend headless with the extension's own labelling (labels.label_objects):
`ulip2 blender tag` (cli/blender.py) runs `python -m blender_addon.headless.tag_file JOB` in a
child process with bpy, so a file that crashes Blender ends only that process.

JOB is a core.blender_jobs.TagJob as one JSON line; the one line on stdout is its TagAnswer.
Progress and Blender's own messages go to stderr.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import bpy

from core.blender_jobs import TagAnswer, TagJob, failed, read_job
from core.errors import Ulip2Error
from core.processes import end_with

from ..scene.inference import Models
from ..scene.labels import Outcome, label_objects


def objects_to_tag(source: Path, all_objects: bool) -> list:
    """The file's own objects marked as assets (every object with all_objects); linked
    objects belong to another file and cannot be changed here."""
    objects = [obj for obj in bpy.data.objects if obj.library is None and (all_objects or obj.asset_data is not None)]
    if objects:
        return objects
    if all_objects:
        raise Ulip2Error(f"{source}: the file has no objects of its own to tag")
    raise Ulip2Error(f"{source}: no object is marked as an asset; tag every object with --all-objects, or mark the "
                     "assets in Blender first (Mark as Asset)")


@contextmanager
def evaluated(objects):
    """Show the objects the depsgraph would not evaluate (in no scene: asset files often
    keep assets so; hidden; in an excluded collection) while they are tagged: linked into
    the scene and unhidden, all of it undone before the file is saved."""
    scene = bpy.context.scene
    hidden = [obj for obj in objects if not obj.visible_get()]
    added = [obj for obj in hidden if obj.name not in scene.collection.objects]
    for obj in added:
        scene.collection.objects.link(obj)
    states = [(obj, obj.hide_viewport, obj.hide_get()) for obj in hidden]
    for obj in hidden:
        obj.hide_viewport = False
        obj.hide_set(False)
    try:
        yield
    finally:
        for obj, hide_viewport, hide in states:
            obj.hide_viewport = hide_viewport
            obj.hide_set(hide)
        for obj in added:
            scene.collection.objects.unlink(obj)


def tag_file(job: TagJob) -> TagAnswer:
    """Open job.source (nothing of it runs), label its objects, save job.out atomically."""
    source, out = Path(job.source), Path(job.out)
    try:
        bpy.ops.wm.open_mainfile(filepath=str(source), load_ui=False, use_scripts=False)
    except RuntimeError as exc:
        raise Ulip2Error(f"{source}: Blender could not open it ({' '.join(str(exc).split())})") from None
    objects = objects_to_tag(source, job.all_objects)
    models = Models(job.bundle, job.device, torch_text=True)
    outcome, said = Outcome(), None
    with evaluated(objects):
        for done, total, message in label_objects(models, objects, outcome, vocabulary=job.vocabulary, k=job.k):
            if message != said:  # one line per stage and per object, not per slice of a vocabulary
                print(f"ulip2: {message} ({done + 1} of {total})", file=sys.stderr, flush=True)
                said = message
    if not outcome.labelled:
        raise Ulip2Error(f"{source}: nothing to tag, no object has a surface to sample ({', '.join(outcome.skipped)})")
    staged = out.with_name(f".{out.stem}.{os.getpid()}.tmp.blend")
    try:  # written beside OUT, then moved over it: OUT is whole or untouched
        bpy.ops.wm.save_as_mainfile(filepath=str(staged), copy=True)
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    return TagAnswer(labelled={name: {"tags": tags, "caption": caption} for name, (tags, caption) in outcome.labelled.items()},
                     skipped=outcome.skipped)


def main() -> None:
    job = read_job(sys.argv[1])
    end_with(job.parent)
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False  # said, so no file turns it on
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # Blender's C code prints to fd 1: send it to stderr, not the answer
    try:
        answer = tag_file(job)
    except Ulip2Error as exc:
        answer = failed(job, str(exc))
    except ImportError as exc:  # a bundle without a text tower, and no torch here
        answer = failed(job, f"{job.bundle} has no text tower and {exc.name} is missing to embed texts without one: "
                             "pip install 'ulip2[torch]', or --bundle DIR of a bundle with one (ulip2 models add-text "
                             "default --out DIR)")
    answers.write(answer.to_line() + "\n")
    answers.flush()


if __name__ == "__main__":
    main()
