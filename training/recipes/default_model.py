"""The shipped default model: a small encoder in the `minilm` space, trained on the Sweet
Home 3D catalogue by this project's own pipeline, compared with a D2 shape baseline.

    python -m training.recipes.sweethome3d prepare --out DATA       (fetch, catalogue, split)
    python -m training.recipes.default_model all --data DATA --work WORK --bundle core/data/default_bundle

`all` runs the stages in turn; each also runs alone, so the GPU work can move to another
machine with nothing but the pack:

    build   two triplet stores of the trainable items (WORK/store, WORK/point-store):
            Blender's (12 Cycles views, points from the evaluated mesh, the metadata
            captioner's sentences beside the catalogue's texts, as `ulip2 triplets build`
            makes them) and trimesh's (points as `ulip2 eval` and `ulip2 index` sample OBJ
            files, the catalogue's texts); then their feature caches
    pack    WORK/pack.npz: what training reads, and a validation split of the training
            items (training/recipes/selection.py); nothing of the held-out items
    select  (optional) the settings compared on the validation split; `train` defaults to
            the configuration it chose (selection.CHOSEN)
    train   the chosen configuration on every training item (resumes from WORK/run/last.pt)
    ship    the bundle, then held-out zero-shot accuracy and the D2 baseline, same run

Held-out items never reach training: their names are used only as class labels at test
time, the encoder sees their geometry alone, and a trainable item whose mesh file is
byte-identical to a held-out one is left out too. Every stage skips what is done.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import Ulip2Error

from .sweethome3d import read_catalogue

SPACE = "minilm"
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
    from core.triplets.build import render_files
    from core.triplets.caption import caption_store

    items = trainable(data, records)
    store = TripletStore(store_root, create=not (store_root / "store.json").is_file())
    # The renderer's other defaults (Cycles, its samples) as `ulip2 triplets build` leaves them.
    done = render_files(store, [(data / r["mesh"]).resolve() for r in items.values()],
                        {"count": views, "resolution": resolution}, workers=workers)
    library = {key: {"facts": facts_for(r), "texts": captions_for(r)} for key, r in items.items()}
    captioned = caption_store(store, load_captioner("metadata"), load_space(SPACE), k=DEFAULT_K, library=library)
    return {"trainable": len(items), **done, "failed": len(done["failed"]), "captioned_now": captioned}


def build_point_store(data: Path, store_root: Path, records: list[dict]) -> dict:
    """The trainable items sampled as `ulip2 eval` samples them (trimesh, 10k points, seed 0),
    captioned with the catalogue's texts; stored keys are skipped."""
    from tqdm import tqdm

    from core.meshio import load_points
    from core.triplets import TripletStore

    items = trainable(data, records)
    store = TripletStore(store_root, create=not (store_root / "store.json").is_file())
    done = set(store.state())
    todo = {key: record for key, record in items.items() if key not in done}
    for key, record in tqdm(todo.items(), desc="point store", unit="object", file=sys.stderr, dynamic_ncols=True):
        mesh = data / record["mesh"]
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
    return {"trainable": len(items), "written": len(todo)}


def build(data: Path, work: Path, *, views: int = 12, resolution: int = 224, workers: int = 2) -> dict:
    """Both stores and their feature caches; refuses a store holding a held-out item."""
    from ..features import load_or_build_features

    records = read_catalogue(data)["records"]
    built = {"render_store": build_store(data, work / "store", records, views=views, resolution=resolution,
                                         workers=workers),
             "point_store": build_point_store(data, work / "point-store", records)}
    held_out = held_out_keys(data, records)
    for store_root in (work / "store", work / "point-store"):
        if leaked := set(load_or_build_features(store_root, SPACE).ids) & held_out:
            raise Ulip2Error(f"{store_root}: holds {len(leaked)} held-out items; train on a store this recipe built")
    return built


def ship(data: Path, weights: Path, bundle: Path, job: dict) -> dict:
    """Export the trained weights as a bundle, then score it on the held-out items beside the
    D2 nearest-neighbour baseline of the same split (bundle/evaluation.json)."""
    from core.runtime import PointEncoder
    from core.spaces import load_space

    from ..evaluation import evaluate, load_eval_set
    from . import d2
    from .corpus_model import export

    catalogue = read_catalogue(data)
    records = catalogue["records"]
    train_objects = len(trainable(data, records))
    export(weights, bundle, job, f"training.recipes.default_model: Sweet Home 3D catalogue, {train_objects} objects, "
                                 f"{job['encoder']}, {job['epochs']} epochs on the {job['source']!r} source, "
                                 f"seed {job['seed']}")
    encoder = PointEncoder(bundle, device="cpu")
    model = evaluate(encoder, load_space(SPACE), load_eval_set(data / "test.csv", encoder.num_points))
    labelled = [r for r in records if r["class"] and not r["load_error"]]
    meshes = {r["id"]: data / r["mesh"] for r in labelled}
    desc, _ = d2.descriptors(meshes, data / "cache", points=catalogue["points"], seed=catalogue["seed"])
    train = [r for r in labelled if r["split"] == "train"]
    test = [r for r in labelled if r["split"] == "test"]
    baseline = d2.nearest_neighbour_top1([desc[r["id"]] for r in train], [r["class"] for r in train],
                                         [desc[r["id"]] for r in test], [r["class"] for r in test])
    result = {"held_out": model["n"], "classes": model["classes"], "zero_shot_top1": round(model["top1"], 4),
              "zero_shot_top5": round(model["top5"], 4), "d2_nearest_neighbour_top1": round(baseline, 4),
              "chance": round(1 / model["classes"], 4), "train_objects": train_objects, **job}
    (bundle / "evaluation.json").write_text(json.dumps(result | {"per_class_top1": model["per_class_top1"]},
                                                       indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    from . import selection

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    stages = {name: sub.add_parser(name, help=help) for name, help in (
        ("all", "build, pack, train and ship"), ("build", "the two triplet stores and their features"),
        ("pack", "WORK/pack.npz from the stores"), ("select", "compare settings on the validation split"),
        ("train", "train the chosen settings on every training item"), ("ship", "bundle + held-out evaluation"))}
    for name in ("all", "build", "pack", "ship"):
        stages[name].add_argument("--data", type=Path, required=True, help="folder made by training.recipes.sweethome3d prepare")
    for name in ("all", "build", "pack"):
        stages[name].add_argument("--work", type=Path, required=True, help="working folder: stores, pack, run")
    for name in ("all", "build"):
        stages[name].add_argument("--views", type=int, default=12, help="views per object (default 12)")
        stages[name].add_argument("--resolution", type=int, default=224, help="view size in pixels (default 224)")
        stages[name].add_argument("--workers", type=int, default=2, help="parallel Blender workers (default 2)")
    for name in ("select", "train"):
        stages[name].add_argument("--pack", type=Path, required=True, help="WORK/pack.npz")
        stages[name].add_argument("--out", type=Path, required=True, help="folder for the runs")
    for name in ("all", "select", "train"):
        stages[name].add_argument("--device", default="auto", help="cuda, cpu or auto (default: cuda when present)")
    for name in ("all", "train", "ship"):
        chosen = selection.CHOSEN
        stages[name].add_argument("--source", choices=sorted(selection.SOURCES), default=chosen["source"],
                                  help=f"where points and captions come from (default {chosen['source']}: "
                                       "trimesh points, the catalogue's texts; see selection.SOURCES)")
        stages[name].add_argument("--encoder", default=chosen["encoder"], help=f"config (default {chosen['encoder']})")
        stages[name].add_argument("--epochs", type=int, default=chosen["epochs"], help=f"default {chosen['epochs']}")
        stages[name].add_argument("--lr", type=float, default=chosen["lr"], help=f"default {chosen['lr']:g}")
        stages[name].add_argument("--seed", type=int, default=0, help="default 0 (the shipped one)")
    for name in ("all", "ship"):
        stages[name].add_argument("--bundle", type=Path, required=True, help="where to write the trained bundle")
    stages["ship"].add_argument("--weights", type=Path, required=True, help="encoder.safetensors from train")
    stages["select"].add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    stages["select"].add_argument("--time-limit", type=float, help="start no run after this many seconds")
    args = parser.parse_args(argv)
    job = {k: getattr(args, k) for k in ("source", "encoder", "epochs", "lr", "seed")} if "seed" in args else None
    try:
        run_stages(args, job)
    except Ulip2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def run_stages(args: argparse.Namespace, job: dict | None) -> None:
    from . import selection

    if args.stage in ("all", "build"):
        print(f"triplets: {json.dumps(build(args.data, args.work, views=args.views, resolution=args.resolution, workers=args.workers))}",
              file=sys.stderr)
    if args.stage == "pack" or args.stage == "all" and not (args.work / "pack.npz").is_file():
        selection.write_pack(args.data, args.work / "point-store", args.work / "store", args.work / "pack.npz", SPACE)
    if args.stage == "select":
        ranked = selection.select(args.pack, args.out, device=args.device, workers=args.workers,
                                  time_limit=args.time_limit)
        for row in ranked["table"]:
            print(json.dumps(row))
        print(json.dumps({"chosen": ranked["chosen"], "runs": ranked["runs"]}))
    if args.stage in ("all", "train"):
        pack, out = (args.work / "pack.npz", args.work / "run") if args.stage == "all" else (args.pack, args.out)
        print(json.dumps(selection.train(pack, job, out, device=args.device)))
    if args.stage in ("all", "ship"):
        weights = args.work / "run" / "encoder.safetensors" if args.stage == "all" else args.weights
        print(json.dumps(ship(args.data, weights, args.bundle, job)))


if __name__ == "__main__":
    sys.exit(main())
