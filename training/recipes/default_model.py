"""The shipped default model: a small encoder in the `minilm` space, trained on the Sweet
Home 3D catalogue by this project's own pipeline, compared with a D2 shape baseline.

    python -m training.recipes.sweethome3d prepare --out DATA          (fetch, catalogue, split)
    python -m training.recipes.default_model --data DATA --work WORK --bundle core/data/default_bundle

Triplets are built as `ulip2 triplets build` builds them: Cycles views and points from
Blender's evaluated mesh, in headless Blender workers. Captions are the metadata
captioner's sentences (colours measured in the renders, the catalogue name, shape and
size words) and, beside them, the catalogue's own texts (name, category, tags: the text a
studio library has); no vision model. Every stage is rerunnable and skips what is done:
renders, captions, the feature cache, training (resumes from WORK/run/last.pt), export,
and the evaluation. Held-out items never reach training: their names are used only as
class labels at test time, the encoder sees their geometry alone, and a trainable item
whose mesh file is byte-identical to a held-out one is left out too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPACE = "minilm"
CONFIG = "pointbert-mini"


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


def facts_for(record: dict) -> dict:
    """The catalogue's name and size for the metadata captioner: OBJ files carry no units
    (these are in cm), so the measured extents would read as metres."""
    facts = {"name": record["name"]}
    if record.get("size_cm"):
        facts["dimensions"] = [v / 100 for v in record["size_cm"]]  # width, depth, height: x, y, z
    return facts


def held_out_keys(data: Path, records: list[dict]) -> set[str]:
    """Triplet keys (mesh content hashes) of the held-out items."""
    from core.triplets import key_for_file

    return {key_for_file(data / r["mesh"]) for r in records if r["split"] == "test"}


def trainable(data: Path, records: list[dict]) -> dict[str, dict]:
    """Catalogue records to train on, by triplet key (the mesh file's content hash): every
    loadable one outside the test split, less any whose mesh is a held-out item's."""
    from core.triplets import key_for_file

    held_out = held_out_keys(data, records)
    found = {}
    for record in records:
        if record["split"] == "test" or record["load_error"]:
            continue
        key = key_for_file(data / record["mesh"])
        if key not in held_out:
            found.setdefault(key, record)  # the same file twice is one object
    return found


def build_store(data: Path, store_root: Path, records: list[dict], *, views: int = 12, resolution: int = 224,
                workers: int = 2) -> dict:
    """Render, sample and caption the trainable items into a triplet store; a rerun skips
    what is stored and captions only what is not captioned yet."""
    from core.captioners import DEFAULT_K, load_captioner
    from core.spaces import load_space
    from core.triplets import TripletStore
    from core.triplets_cli import caption_store, render_files

    items = trainable(data, records)
    store = TripletStore(store_root, create=not (store_root / "store.json").is_file())
    # The renderer's other defaults (Cycles, its samples) as `ulip2 triplets build` leaves them.
    done = render_files(store, [(data / r["mesh"]).resolve() for r in items.values()],
                        {"count": views, "resolution": resolution}, workers=workers)
    library = {key: {"facts": facts_for(r), "texts": captions_for(r)} for key, r in items.items()}
    captioned = caption_store(store, load_captioner("metadata"), load_space(SPACE), k=DEFAULT_K, library=library)
    return {"trainable": len(items), **done, "failed": len(done["failed"]), "captioned_now": captioned}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder made by training.recipes.sweethome3d prepare")
    parser.add_argument("--work", type=Path, required=True, help="working folder: triplet store, features, run")
    parser.add_argument("--bundle", type=Path, required=True, help="where to write the trained bundle")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--views", type=int, default=12, help="views per object (default 12)")
    parser.add_argument("--resolution", type=int, default=224, help="view size in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=2, help="parallel Blender workers (default 2)")
    args = parser.parse_args(argv)

    from core.errors import Ulip2Error
    from core.export import export_bundle
    from core.runtime import PointEncoder
    from core.spaces import load_space

    from ..evaluation import evaluate, load_eval_set
    from ..features import load_or_build_features
    from ..trainer import Trainer, TrainConfig
    from . import d2

    catalogue = json.loads((args.data / "catalogue.json").read_text())
    records = catalogue["records"]
    store_root = args.work / "store"
    built = build_store(args.data, store_root, records, views=args.views, resolution=args.resolution,
                        workers=args.workers)
    print(f"triplets: {json.dumps(built)}", file=sys.stderr)
    features = load_or_build_features(store_root, SPACE)
    if leaked := set(features.ids) & held_out_keys(args.data, records):
        raise Ulip2Error(f"{store_root}: holds {len(leaked)} held-out items; train on a store this recipe built")

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
