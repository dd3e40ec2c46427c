"""The multi-source corpus of the default model: Debian's free game and furniture assets,
converted, deduplicated and described, with no human labelling.

    python -m training.recipes.corpus fetch   --out DIR     (apt-get download + dpkg -x)
    python -m training.recipes.corpus build   --out DIR [--sources 0ad,megaglest] [--workers 2]
    python -m training.recipes.corpus dedupe  --out DIR
    python -m training.recipes.corpus split   --out DIR
    python -m training.recipes.corpus summary --out DIR     (objects per source, licences)
    python -m training.recipes.corpus render  --out DIR [--views 4] [--resolution 128] (Blender)
    python -m training.recipes.corpus all     --out DIR

Stages, each resumable (a rerun skips what is done; kill it at any time):
  fetch    every source's Debian packages into DIR/debs, unpacked into DIR/sources/<name>/
           (Sweet Home 3D through its own recipe, training.recipes.sweethome3d prepare, so
           its split is the one today's default was scored on)
  build    every object of every source (training/recipes/sources/) written as one .glb,
           DIR/objects/<source>/<name>.glb, in the glTF frame (y up), then sampled from
           that file exactly as `ulip2 index` samples an asset (10k points) into the triplet
           store DIR/store, with the source's metadata sentences as its texts. One line a
           object in DIR/corpus.jsonl (converted, failed with its reason, or byte-identical
           to an earlier object: a .glb of the same bytes has the same store key)
  dedupe   near-identical geometry (re-textured variants, animation poses): D2 shape
           distributions find candidates, a chamfer distance below NEAR_IDENTICAL on the
           unit sphere confirms them; the later object of a pair is dropped
           (DIR/near_duplicates.json)
  split    per source, by item, stratified by label: 20% of labelled objects held out
           for testing and never trained on, 20% of the other labelled ones for model
           selection (DIR/split.json). Sweet Home 3D keeps its recipe's split
  summary  objects per source, labels, licences (from each package's copyright file):
           DIR/summary.json and a table
  render   Blender's views of each object of the split (Cycles, a ring of --views), then
           the metadata captioner's sentences from them: the colours counted in each view,
           the proportions of the extents Blender measured, the source's name for the
           object (no sizes: game units are not metres). A triplet store, DIR/renders,
           keyed as DIR/store is; `corpus_model pack` adds each view's chosen sentence to
           the object's texts. Not in `all`: hours on 2 cores (the README says how long)

The sources named here are the only ones trained on. assimp's test models are for format
and bad-input tests only, and are no source of this corpus.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import sys
from pathlib import Path

import numpy as np

from core.errors import AssetError, Ulip2Error

from .debian import fetch_packages

# name -> module under training/recipes/sources; the order is the build order.
SOURCES = {
    "sweethome3d": "sweethome3d",
    "0ad": "zeroad",
    "megaglest": "megaglest",
    "warzone2100": "warzone",
    "trigger-rally": "trigger",
    "redeclipse": "redeclipse",
    "procedural": "procedural",
}
STORE_POINTS = 10_000
SPACE = "minilm"
TEST_FRACTION = VAL_FRACTION = 0.2
SPLIT_SEED = 0
# Chamfer distance (2,048 points of each cloud to the other's 10k, both ways, averaged; on
# the unit sphere) under which two objects count as the same geometry. Measured on the Sweet
# Home 3D objects: a porch column and its copy 0.007, a cabinet and its drawer variant 0.008;
# the closest different objects (a screen door and a shower door) 0.011 and up.
NEAR_IDENTICAL = 0.01
DEDUPE_POINTS = 2048
DEDUPE_NEIGHBOURS = 8


def source_module(name: str):
    if name not in SOURCES:
        raise Ulip2Error(f"unknown source {name!r}; the corpus's sources: {', '.join(SOURCES)}")
    return importlib.import_module(f"training.recipes.sources.{SOURCES[name]}")


def _names(sources: str | None) -> list[str]:
    names = list(SOURCES) if not sources else [s.strip() for s in sources.split(",") if s.strip()]
    for name in names:
        source_module(name)
    return names


def source_root(out: Path, name: str) -> Path:
    return out / "sources" / name


# ---- fetch -----------------------------------------------------------------------------

def fetch(out: Path, sources: list[str]) -> None:
    """Each source's packages, downloaded and unpacked (a source with `prepare` runs it)."""
    for name in sources:
        module = source_module(name)
        root = source_root(out, name)
        if hasattr(module, "prepare"):
            module.prepare(root)
        elif module.PACKAGES:
            fetch_packages(module.PACKAGES, out / "debs", root,
                           f"or unpack {' and '.join(module.PACKAGES)} into {root} yourself (dpkg -x)")


# ---- build -----------------------------------------------------------------------------

def read_lines(out: Path) -> dict[str, dict]:
    """DIR/corpus.jsonl by object key (the last line of a key wins; a torn last line is ignored)."""
    lines: dict[str, dict] = {}
    path = out / "corpus.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            lines[entry["object"]] = entry
    return lines


def file_name(object_id: str) -> str:
    """A safe, unique file name for an object id: its words and a short hash of the id."""
    words = re.sub(r"[^A-Za-z0-9._-]+", "_", object_id).strip("._")[:80] or "object"
    return f"{words}-{hashlib.sha256(object_id.encode()).hexdigest()[:8]}.glb"


_TODO: list = []  # the objects a build's workers convert (inherited through fork)


def _convert(args: tuple[int, str]) -> dict:
    """Worker: one object -> its .glb (written atomically) and 10k points sampled from it."""
    import trimesh

    from core.meshio import load_points

    from .sources import SourceError

    index, glb = args
    obj = _TODO[index]
    try:
        meshes = obj.load()
        data = trimesh.Scene(meshes).export(file_type="glb")
        path = Path(glb)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        points = load_points(path, STORE_POINTS, seed=0)
    except (SourceError, AssetError) as error:
        return {"index": index, "error": str(error)}
    except Exception as error:  # a reader's bug on one object must not end a corpus build
        return {"index": index, "error": f"{type(error).__name__}: {error}"}
    return {"index": index, "key": hashlib.sha256(data).hexdigest(), "points": points.astype(np.float16),
            "triangles": int(sum(len(m.faces) for m in meshes))}


def build(out: Path, sources: list[str], workers: int = 2) -> dict:
    """Convert and sample every object not yet in DIR/corpus.jsonl; returns counts per source."""
    from tqdm import tqdm

    from core.triplets import TripletStore

    global _TODO
    done = read_lines(out)
    store_root = out / "store"
    store = TripletStore(store_root, create=not (store_root / "store.json").is_file())
    stored = {key for key, state in store.state().items() if state["event"] != "failed"}
    owner = {line["key"]: line["object"] for line in done.values() if line.get("key") and not line.get("same_as")}
    counts = {}
    with open(out / "corpus.jsonl", "a") as log:
        for name in sources:
            root = source_root(out, name)
            _TODO = [obj for obj in source_module(name).objects(root) if obj.key not in done]
            jobs = [(i, str(out / "objects" / name / file_name(obj.id))) for i, obj in enumerate(_TODO)]
            tally = collections.Counter()
            with multiprocessing.get_context("fork").Pool(workers) as pool, \
                    tqdm(total=len(jobs), desc=f"build {name}", unit="object", file=sys.stderr,
                         dynamic_ncols=True) as bar:
                for result in pool.imap(_convert, jobs, chunksize=4):  # in listing order: a stable build order
                    obj = _TODO[result["index"]]
                    entry = {"object": obj.key, "source": obj.source, "id": obj.id, "name": obj.name,
                             "label": obj.label, "texts": obj.texts, "files": obj.files, "split": obj.split}
                    if "error" in result:
                        entry["error"] = result["error"]
                        tally["failed"] += 1
                    else:
                        key = result["key"]
                        entry |= {"key": key, "glb": os.path.relpath(jobs[result["index"]][1], out),
                                  "triangles": result["triangles"]}
                        if key in owner:
                            entry["same_as"] = owner[key]  # byte-identical to an earlier object
                            tally["byte_identical"] += 1
                        else:
                            if key not in stored:
                                _store(store, key, entry, result["points"], out)
                                stored.add(key)
                            owner[key] = obj.key
                            tally["converted"] += 1
                    log.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    log.flush()
                    bar.update(1)
            counts[name] = dict(tally)
    _TODO = []
    return counts


def _store(store, key: str, entry: dict, points: np.ndarray, out: Path) -> None:
    """One object into the triplet store: its points and its metadata sentences as texts."""
    texts = entry["texts"] or [f"a {entry['name']}"]
    with store.new_record(key) as writer:
        writer.commit(points, {
            "source": {"path": str(out / entry["glb"]), "object": entry["name"], "kind": "file"},
            "views": {"files": [], "resolution": 0, "engine": "none", "samples": 0,
                      "elevation_deg": 0.0, "azimuth_deg": []},
            "facts": {"object_names": [entry["name"]], "corpus_object": entry["object"]}})
    store.set_captions(key, {
        "captioner": "source-metadata", "model": None, "vision_model": False, "space": SPACE,
        "ranking": "none", "k": len(texts),
        "views": [{"candidates": [{"text": t, "score": 1.0}], "chosen": 0, "caption": t} for t in texts]})


def distinct(lines: dict[str, dict], near: dict[str, str] | None = None) -> list[dict]:
    """The converted objects that are nobody's duplicate, in build order."""
    near = near or {}
    return [e for e in lines.values() if e.get("key") and not e.get("same_as") and e["object"] not in near]


# ---- dedupe ----------------------------------------------------------------------------

def chamfer(a_query: np.ndarray, a_tree, b_query: np.ndarray, b_tree) -> float:
    """Mean distance from each cloud's query points to the other's full cloud, both ways."""
    return float((b_tree.query(a_query)[0].mean() + a_tree.query(b_query)[0].mean()) / 2)


def dedupe(out: Path) -> dict[str, str]:
    """object -> the earlier object it repeats, for near-identical geometry; written to
    DIR/near_duplicates.json."""
    from tqdm import tqdm

    from core.triplets import TripletStore

    from .d2 import d2_descriptor

    from scipy.spatial import cKDTree

    store = TripletStore(out / "store")
    objects = distinct(read_lines(out))
    rng = np.random.default_rng(0)
    clouds, queries = [], []
    for entry in tqdm(objects, desc="dedupe: read", unit="object", file=sys.stderr, dynamic_ncols=True):
        points = store.record(entry["key"]).points()[:, :3].astype(np.float32)
        clouds.append(points)
        queries.append(points[rng.choice(len(points), min(DEDUPE_POINTS, len(points)), replace=False)])
    descriptors = np.stack([d2_descriptor(q) for q in queries]) if queries else np.zeros((0, 1))
    extents = np.stack([np.ptp(q, axis=0) for q in queries]) if queries else np.zeros((0, 3))
    near: dict[str, str] = {}
    for i in tqdm(range(len(objects)), desc="dedupe: compare", unit="object", file=sys.stderr, dynamic_ncols=True):
        later = np.arange(i + 1, len(objects))
        if objects[i]["object"] in near or not len(later):
            continue
        # Candidates: later objects with the closest shape distributions and like extents.
        d = np.abs(descriptors[later] - descriptors[i]).sum(axis=1) + np.abs(extents[later] - extents[i]).sum(axis=1)
        tree = cKDTree(clouds[i])
        for j in later[np.argsort(d)[:DEDUPE_NEIGHBOURS]]:
            if objects[j]["object"] not in near and \
                    chamfer(queries[i], tree, queries[j], cKDTree(clouds[j])) < NEAR_IDENTICAL:
                near[objects[j]["object"]] = objects[i]["object"]
    _write_json(out / "near_duplicates.json", near)
    return near


# ---- split -----------------------------------------------------------------------------

def split(out: Path) -> dict[str, str]:
    """object -> 'test' | 'val' | 'train' for the distinct objects; DIR/split.json. A source
    that fixes its own split (Sweet Home 3D) keeps it; the validation split is drawn from
    the labelled training objects only."""
    from .sweethome3d import split_by_item

    objects = distinct(read_lines(out), _read_json(out / "near_duplicates.json", "dedupe"))
    result: dict[str, str] = {}
    for name in SOURCES:
        mine = [e for e in objects if e["source"] == name]
        label = {e["object"]: e["label"] for e in mine if e.get("label")}
        parts = {e["object"]: e["split"] for e in mine if e.get("split")}
        parts |= split_by_item({k: v for k, v in label.items() if k not in parts}, TEST_FRACTION, SPLIT_SEED)
        val = split_by_item({k: label[k] for k, p in parts.items() if p == "train" and k in label},
                            VAL_FRACTION, SPLIT_SEED + 1)
        for e in mine:
            part = parts.get(e["object"], "train")
            result[e["object"]] = "val" if part == "train" and val.get(e["object"]) == "test" else part
    _write_json(out / "split.json", result)
    return result


# ---- render ----------------------------------------------------------------------------

RENDERS = "renders"  # the render stage's triplet store, in DIR
RENDER_VIEWS, RENDER_RESOLUTION = 4, 128
CAPTION_CANDIDATES = 3


def split_objects(out: Path) -> list[dict]:
    """The distinct objects the split placed: what the pack and the render stage take."""
    parts = _read_json(out / "split.json", "split")
    return [e for e in distinct(read_lines(out), _read_json(out / "near_duplicates.json", "dedupe"))
            if e["object"] in parts]


def render(out: Path, *, views: int = RENDER_VIEWS, resolution: int = RENDER_RESOLUTION, workers: int = 2,
           show_progress: bool = True) -> dict:
    """The render stage (the module's docstring). Each object's views are committed as they
    are rendered and its sentences as they are written, so a kill keeps both and a rerun
    does the rest."""
    from core.progress import bar
    from core.triplets import TripletStore
    from core.triplets.build import render_files
    from core.triplets.caption import caption_store, load_captioning

    objects = split_objects(out)
    root = out / RENDERS
    store = TripletStore(root, create=not (root / "store.json").is_file())
    with bar("render", "object", enabled=show_progress) as on_progress:
        done = render_files(store, [out / e["glb"] for e in objects], {"count": views, "resolution": resolution},
                            workers=workers, on_progress=on_progress)
    captioner, space = load_captioning("metadata", None, SPACE, "cpu")
    # The noun is the source's name for the object (a .glb's node names are the converter's).
    library = {e["key"]: {"facts": {"name": e["name"], "size_known": False}} for e in objects}
    with bar("caption", "object", enabled=show_progress) as on_progress:
        captioned = caption_store(store, captioner, space, k=CAPTION_CANDIDATES, library=library,
                                  on_progress=on_progress)
    return {"rendered": done["written"], "already": done["skipped_done"], "failed": len(done["failed"]),
            "captioned": captioned}


def render_texts(out: Path) -> dict[str, list[str]]:
    """store key -> the distinct sentences the render stage chose for the object's views
    (empty when the stage has not run)."""
    from core.triplets import TripletStore

    root = out / RENDERS
    if not (root / "store.json").is_file():
        return {}
    return {record.key: list(dict.fromkeys(record.captions)) for record in TripletStore(root).records(captioned=True)}


# ---- examples --------------------------------------------------------------------------

EXAMPLE_TEXTURE_SIDE = 256  # examples stay small in git


def export_examples(out: Path, picks: dict[str, str], into: Path) -> list[Path]:
    """Copy chosen objects (object key -> file stem) into `into` as small .glb files
    (textures downscaled to EXAMPLE_TEXTURE_SIDE); test objects are refused."""
    import trimesh

    lines = read_lines(out)
    parts = _read_json(out / "split.json", "split")
    written = []
    for key, stem in picks.items():
        if key not in lines or "glb" not in lines[key]:
            raise Ulip2Error(f"{key}: not a converted object of {out / 'corpus.jsonl'}")
        if parts.get(key) == "test":
            raise Ulip2Error(f"{key} is a held-out test object; pick a training object for the examples")
        scene = trimesh.load_scene(out / lines[key]["glb"], process=False)
        for mesh in scene.geometry.values():
            material = getattr(mesh.visual, "material", None)
            image = getattr(material, "baseColorTexture", None)
            if image is not None and max(image.size) > EXAMPLE_TEXTURE_SIDE:
                image = image.copy()
                image.thumbnail((EXAMPLE_TEXTURE_SIDE, EXAMPLE_TEXTURE_SIDE))
                material.baseColorTexture = image
        target = into / f"{stem}.glb"
        target.write_bytes(scene.export(file_type="glb"))
        written.append(target)
    return written


# ---- summary ---------------------------------------------------------------------------

def summary(out: Path) -> dict:
    """Objects per source at each stage, labels, and each source's licences."""
    from .sources import licence

    lines = read_lines(out)
    near = _read_json(out / "near_duplicates.json", "dedupe", missing_ok=True) or {}
    parts = _read_json(out / "split.json", "split", missing_ok=True) or {}
    table = {}
    for name in SOURCES:
        mine = [e for e in lines.values() if e["source"] == name]
        if not mine:
            continue
        kept = [e for e in distinct(lines, near) if e["source"] == name]
        module = source_module(name)
        labels = collections.Counter(e["label"] for e in kept if e.get("label"))
        table[name] = {
            "found": len(mine), "failed": sum("error" in e for e in mine),
            "byte_identical": sum(bool(e.get("same_as")) for e in mine),
            "near_identical": sum(e["object"] in near for e in mine),
            "distinct": len(kept), "labelled": sum(labels.values()), "classes": len(labels),
            "test": sum(parts.get(e["object"]) == "test" for e in kept),
            "val": sum(parts.get(e["object"]) == "val" for e in kept),
            "licences": [licence(_doc_root(out, name), p) for p in module.PACKAGES],
            "label_counts": dict(labels.most_common()),
        }
    result = {"sources": table, "distinct": sum(t["distinct"] for t in table.values())}
    _write_json(out / "summary.json", result)
    return result


def _doc_root(out: Path, name: str) -> Path:
    """Where a source's usr/share/doc lies (Sweet Home 3D's recipe unpacks into extracted/)."""
    root = source_root(out, name)
    return root / "extracted" if (root / "extracted" / "usr").is_dir() else root


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path, stage: str, missing_ok: bool = False):
    if not path.is_file():
        if missing_ok:
            return None
        raise Ulip2Error(f"{path} is missing; run the {stage} stage first: "
                         f"python -m training.recipes.corpus {stage} --out {path.parent}")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, help in (("all", "every stage in turn"), ("fetch", "download and unpack the packages"),
                        ("build", "objects -> .glb, points, texts"), ("dedupe", "near-identical geometry"),
                        ("split", "test / val / train per source"), ("summary", "counts and licences"),
                        ("render", "views and the metadata captioner's sentences (Blender)"),
                        ("examples", "copy chosen training objects into a folder (small .glb)")):
        p = sub.add_parser(stage, help=help)
        p.add_argument("--out", type=Path, required=True, help="working folder (outside the repository)")
        if stage in ("all", "fetch", "build"):
            p.add_argument("--sources", help=f"comma-separated subset (default all: {','.join(SOURCES)})")
        if stage in ("all", "build", "render"):
            p.add_argument("--workers", type=int, default=2,
                           help="processes converting objects, or Blender workers rendering them (default 2)")
        if stage == "render":
            p.add_argument("--views", type=int, default=RENDER_VIEWS, help=f"views of each object (default {RENDER_VIEWS})")
            p.add_argument("--resolution", type=int, default=RENDER_RESOLUTION,
                           help=f"pixels a side (default {RENDER_RESOLUTION})")
        if stage == "examples":
            p.add_argument("--into", type=Path, required=True, help="the folder to copy them into")
            p.add_argument("picks", nargs="+", metavar="KEY=NAME", help="object key and file name, e.g. 0ad/...=horse")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        names = _names(getattr(args, "sources", None))
        if args.stage in ("all", "fetch"):
            fetch(out, names)
        if args.stage in ("all", "build"):
            print(json.dumps({"built": build(out, names, args.workers)}))
        if args.stage in ("all", "dedupe"):
            print(json.dumps({"near_identical": len(dedupe(out))}))
        if args.stage in ("all", "split"):
            print(json.dumps({"split": collections.Counter(split(out).values())}))
        if args.stage == "render":
            print(json.dumps(render(out, views=args.views, resolution=args.resolution, workers=args.workers)))
        if args.stage == "examples":
            picks = dict(p.split("=", 1) for p in args.picks)
            for path in export_examples(out, picks, args.into):
                print(path)
        if args.stage in ("all", "summary"):
            result = summary(out)
            print(f"{'source':<14} {'found':>6} {'failed':>6} {'same':>6} {'near':>6} {'distinct':>8} "
                  f"{'labelled':>8} {'classes':>7}  licence")
            for name, row in result["sources"].items():
                main_licence = ", ".join(lic["main"] or lic["all"][0] for lic in row["licences"] if lic["all"]) or "synthetic"
                print(f"{name:<14} {row['found']:>6} {row['failed']:>6} {row['byte_identical']:>6} "
                      f"{row['near_identical']:>6} {row['distinct']:>8} {row['labelled']:>8} {row['classes']:>7}  "
                      f"{main_licence}")
            print(f"distinct objects: {result['distinct']}")
    except Ulip2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
