"""`ulip2 retrain`: a studio's own assets -> triplets -> features -> fine-tune -> held-out
eval -> a new bundle, in one command; every stage resumes where a stop left it.

Assets are laid out one subfolder per label (PATH/<label>/<files>), the layout `ulip2 eval`
reads. A fixed share of each label is held out (chosen by a hash of the file name, so the
split never changes between runs); the encoder is evaluated on it before and after. Files
only Blender reads (core.formats.BLENDER_FORMATS) are never held out: the evaluation samples
meshes without Blender.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path


def split_files(files: list[Path], roots: list[Path], holdout: float) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(training files, [(held-out file, label)]): the label is the file's folder under its root."""
    from core.formats import TRIMESH_FORMATS

    train, held = [], []
    for path in files:
        root = next(r for r in roots if r == path or r in path.parents)
        label = path.relative_to(root).parts[0] if path.parent != root else None
        bucket = int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if label is not None and bucket < holdout and path.suffix.lower() in TRIMESH_FORMATS:
            held.append((path, label))
        else:
            train.append(path)
    return train, held


def retrain(paths: list[Path], source: Path, out: Path, work: Path, *, epochs: int, batch_size: int, lr: float,
            holdout: float, views: int, resolution: int, captioner: str, workers: int) -> dict:
    from core.blender_pool import NEEDS_BLENDER, blender_available
    from core.bundle import read_bundle
    from core.captioners import DEFAULT_K
    from core.errors import Ulip2Error
    from core.export import add_upright, export_bundle
    from core.upright import Upright
    from core.runtime import PointEncoder
    from core.progress import bar
    from core.triplets import TripletStore
    from core.triplets.build import render_files
    from core.triplets.caption import caption_store, load_captioning
    from core.formats import walk

    from .evaluation import evaluate, load_eval_set
    from .features import load_or_build_features
    from .trainer import Trainer, TrainConfig

    if not blender_available():
        raise Ulip2Error(f"retrain renders its triplets in Blender: it {NEEDS_BLENDER}")
    bundle = read_bundle(source, warn_untrained=False)
    roots = [p.resolve() for p in paths]
    found = walk(paths)
    files, skipped = found.files, found.skipped
    train, held = split_files(files, roots, holdout)
    if len({label for _, label in held}) < 2:
        raise Ulip2Error("retrain holds out part of each label to measure itself: put the assets in one subfolder "
                         "per label (PATH/<label>/...), with enough files per label")
    work.mkdir(parents=True, exist_ok=True)
    heldout_csv = work / "heldout.csv"
    with open(heldout_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows((str(p), label) for p, label in held)

    def stage(text: str) -> None:
        print(f"retrain: {text}", file=sys.stderr)

    stage(f"1/5 triplets of {len(train)} files ({len(held)} held out)")
    store = work / "store"
    captioning = load_captioning(captioner, None, bundle.space, "cpu")  # before any work: a missing model fails first
    triplets = TripletStore(store, create=not (store / "store.json").is_file())
    with bar("rendering", "object") as on_progress:  # a file that fails is recorded in the store; the rest go on
        render_files(triplets, train, {"count": views, "resolution": resolution}, workers=workers,
                     on_progress=on_progress)
    with bar(f"captioning ({captioning[0].name})", "object") as on_progress:
        caption_store(triplets, *captioning, k=DEFAULT_K, on_progress=on_progress)
    stage("2/5 features")
    with bar("features", "object") as on_progress:
        features = load_or_build_features(store, bundle.space, on_progress=on_progress)

    space = captioning[1]  # the bundle's space, loaded once for captions and evaluation
    heldout = load_eval_set(heldout_csv, bundle.num_points)
    stage("3/5 held-out accuracy before")
    before = evaluate(PointEncoder(bundle, device="cpu"), space, heldout)
    stage("4/5 fine-tuning")
    config = TrainConfig(epochs=epochs, batch_size=min(batch_size, len(features)), lr=lr, init=str(source))
    trainer = Trainer(features, config, work / "run")
    trainer.resume()
    with bar("training", "step", status=lambda: trainer.status) as on_progress:
        trainer.fit(on_progress)
    stage("5/5 export and held-out accuracy after")
    new = export_bundle(out, model=trainer.model.eval(), space=bundle.space, overwrite=True,
                        source=f"ulip2 retrain from {bundle.path} on {len(features)} objects")
    if bundle.upright:  # the fine-tuned encoder still expects its clouds upright
        new = add_upright(new, Upright.load(bundle.path / bundle.upright))
    after = evaluate(PointEncoder(new, device="cpu"), space, heldout)
    keep = ("n", "classes", "top1", "top5")
    result = {"bundle": str(new.path), "trained_on": len(features), "held_out": len(held),
              "before": {k: before[k] for k in keep}, "after": {k: after[k] for k in keep},
              "held_out_failed": before["failed"], "skipped": skipped}
    (work / "retrain.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
