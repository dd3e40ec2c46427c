"""The shipped default model: a small encoder in the `minilm` space, trained on the Sweet
Home 3D catalogue by this project's own pipeline, compared with a D2 shape baseline.

    python -m training.recipes.sweethome3d prepare --out DATA          (fetch, catalogue, split)
    python -m training.recipes.default_model --data DATA --work WORK --bundle core/data/default_bundle

Every stage is rerunnable and skips what is done: triplets (points + the catalogue's names,
tags and categories as captions: the text a studio library has; no vision model), the
feature cache, training (resumes from WORK/run/last.pt), export, and the evaluation.
Held-out items never reach training: their names are used only as class labels at test
time, and the encoder sees their geometry alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SPACE = "minilm"
CONFIG = "pointbert-mini"
STORE_POINTS = 10_000


def captions_for(record: dict) -> list[str]:
    """What a studio library knows of an asset, as sentences: name, category, tags, size."""
    name = record["name"].strip()
    texts = [f"a {name.lower()}", f"{name}, {record['category'].lower()} furniture"]
    tags = [t for t in record.get("tags", []) if t.lower() not in ("blend swap",)]
    if tags:
        texts.append(f"{name}: {', '.join(tags).lower()}")
    if record.get("size_cm"):
        w, d, h = record["size_cm"]
        texts.append(f"a {name.lower()} {w:.0f} cm wide, {d:.0f} cm deep and {h:.0f} cm high")
    return texts


def build_store(data: Path, store_root: Path, records: list[dict]) -> None:
    """One triplet per trainable item (not held out, loadable); already stored keys are skipped."""
    from tqdm import tqdm

    from core.meshio import load_points
    from core.triplets import TripletStore, key_for_file

    store = TripletStore(store_root, create=not (store_root / "store.json").is_file())
    done = set(store.state())
    for record in tqdm(records, desc="triplets", unit="object", file=sys.stderr, dynamic_ncols=True):
        mesh = data / record["mesh"]
        key = key_for_file(mesh)
        if key in done:
            continue
        with store.new_record(key) as writer:
            writer.commit(load_points(mesh, STORE_POINTS, seed=0), {
                "source": {"path": str(mesh), "object": record["name"], "kind": "file"},
                "views": {"files": [], "resolution": 0, "engine": "none", "samples": 0,
                          "elevation_deg": 0.0, "azimuth_deg": []},
                "facts": {"object_names": [record["name"]], "dimensions": record.get("size_cm")}})
        texts = captions_for(record)
        store.set_captions(key, {
            "captioner": "catalogue", "model": None, "vision_model": False, "space": SPACE,
            "ranking": "none", "k": len(texts),
            "views": [{"candidates": [{"text": t, "score": 1.0}], "chosen": 0, "caption": t} for t in texts]})
        done.add(key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder made by training.recipes.sweethome3d prepare")
    parser.add_argument("--work", type=Path, required=True, help="working folder: triplet store, features, run")
    parser.add_argument("--bundle", type=Path, required=True, help="where to write the trained bundle")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)

    from core.export import export_bundle
    from core.runtime import PointEncoder
    from core.spaces import load_space

    from ..evaluation import evaluate, load_eval_set
    from ..features import TripletFeatures, build_features, cache_folder
    from ..trainer import Trainer, TrainConfig
    from . import d2

    catalogue = json.loads((args.data / "catalogue.json").read_text())
    records = catalogue["records"]
    trainable = [r for r in records if r["split"] != "test" and not r["load_error"]]
    store_root = args.work / "store"
    build_store(args.data, store_root, trainable)
    features_dir = cache_folder(store_root, SPACE)
    if not (features_dir / "meta.json").is_file():
        build_features(store_root, SPACE)
    features = TripletFeatures.load(features_dir)

    config = TrainConfig(encoder=CONFIG, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    trainer = Trainer(features, config, args.work / "run")
    trainer.resume()
    trainer.fit()
    export_bundle(args.bundle, model=trainer.model.eval(), space=SPACE, overwrite=True,
                  source=f"training.recipes.default_model: Sweet Home 3D catalogue, {len(features)} objects, "
                         f"{trainer.epoch} epochs of {CONFIG}")

    # The held-out comparison, model and baseline in the same run.
    test_csv = args.data / "test.csv"
    encoder = PointEncoder(args.bundle, device="cpu")
    model = evaluate(encoder, load_space(SPACE), load_eval_set(test_csv, encoder.num_points))
    labelled = [r for r in records if r["class"] and not r["load_error"]]
    meshes = {r["id"]: args.data / r["mesh"] for r in labelled}
    desc, _ = d2.descriptors(meshes, args.data / "cache", points=catalogue["points"], seed=catalogue["seed"])
    train = [r for r in labelled if r["split"] == "train"]
    test = [r for r in labelled if r["split"] == "test"]
    baseline = d2.nearest_neighbour_top1([desc[r["id"]] for r in train], [r["class"] for r in train],
                                         [desc[r["id"]] for r in test], [r["class"] for r in test])
    result = {"held_out": model["n"], "classes": model["classes"], "zero_shot_top1": round(model["top1"], 4),
              "zero_shot_top5": round(model["top5"], 4), "d2_nearest_neighbour_top1": round(baseline, 4),
              "chance": round(1 / model["classes"], 4), "train_objects": len(features), "epochs": trainer.epoch}
    (args.bundle / "evaluation.json").write_text(json.dumps(result | {"per_class_top1": model["per_class_top1"]},
                                                            indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
