"""The Sweet Home 3D furniture catalogues as a labelled data set for the default model.

    python -m training.recipes.sweethome3d prepare --out DIR [--assets FOLDER]

Steps, each skipping what an earlier run finished (so a rerun after a kill goes on):
  fetch      `apt-get download sweethome3d-furniture sweethome3d` into DIR/debs and
             `dpkg -x` them into DIR/extracted (or --assets: a folder already holding
             sweethome3d.jar and *.sh3f files, e.g. from a Sweet Home 3D install)
  catalogue  every catalogue .properties inside each .sh3f (a zip) and sweethome3d.jar
             -> one record per model; the model's files go to DIR/models/<id>/
  check      every model through core.meshio.load_points; failures are recorded
             (the same pass caches the D2 descriptors of the baseline)
  classes    names -> classes by keyword (sweethome3d_classes.json), >= 5 items each
  split      per class, seeded, by item -> DIR/split.json
  write      DIR/catalogue.json (every record with class and split), DIR/train.csv
             and DIR/test.csv (path,label; `ulip2 eval DIR/test.csv` reads it)
  baseline   D2 shape distribution, nearest neighbour of each test item in train

The assets are for the default model only; keep DIR outside the repository.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import posixpath
import random
import re
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from core.errors import Ulip2Error
from training.recipes import d2
from training.recipes.debian import fetch_packages
from training.recipes.properties import parse_properties

PACKAGES = ("sweethome3d-furniture", "sweethome3d")
CLASSES_FILE = Path(__file__).with_name("sweethome3d_classes.json")
MIN_ITEMS = 5
POINTS = 2048  # the points per object of the small encoder the default model trains
ASSETS_HINT = ("pass --assets FOLDER, a folder holding Sweet Home 3D's sweethome3d.jar and "
               "furniture .sh3f files (from an install of Sweet Home 3D on any system)")
# The base catalogue of each archive; the _xx / _xx_YY files beside it only translate it.
_CATALOGUE = re.compile(r"(?:^|/)(?:Default|Plugin)FurnitureCatalog\.properties$")
_WORD = re.compile(r"[a-z]+")
_HEAD_END = re.compile(r" with | and | & |,|\(")


# ---- fetch -----------------------------------------------------------------------------

def fetch(out: Path) -> Path:
    """Download the two packages (unless present) and unpack them; returns DIR/extracted."""
    return fetch_packages(PACKAGES, out / "debs", out / "extracted", ASSETS_HINT)


# ---- catalogue -------------------------------------------------------------------------

def find_archives(root: Path) -> list[Path]:
    """The .sh3f furniture libraries and sweethome3d.jar under `root`, in a stable order."""
    archives = sorted(root.rglob("*.sh3f")) + sorted(root.rglob("sweethome3d.jar"))
    if not archives:
        raise Ulip2Error(f"{root}: no Sweet Home 3D catalogues (*.sh3f, sweethome3d.jar) found; {ASSETS_HINT}")
    return archives


def read_catalogues(archive: Path, root: Path) -> list[dict]:
    """One record per model in the archive's base catalogue(s), in catalogue order."""
    records = []
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if _CATALOGUE.search(name):
                records += catalogue_records(parse_properties(zf.read(name)), name,
                                             archive.relative_to(root).as_posix())
    return records


def catalogue_records(props: dict[str, str], catalogue: str, source: str) -> list[dict]:
    """Records from one parsed catalogue: entries are the keys `model#N` (N from 1)."""
    folder = posixpath.dirname(catalogue)
    numbers = sorted(int(key[len("model#"):]) for key in props
                     if key.startswith("model#") and key[len("model#"):].isdigit())
    records = []
    for n in numbers:
        def field(key: str, default: str = "") -> str:
            return props.get(f"{key}#{n}", default).strip()

        records.append({
            # Catalogue ids (`creator#name`) are unique across the shipped libraries; an
            # entry without one is named by its catalogue and number.
            "id": field("id") or f"{source}#{n}",
            "name": field("name"),
            "tags": [tag.strip() for tag in field("tags").split(",") if tag.strip()],
            "category": field("category"),
            "size_cm": [float(field(k, "0")) for k in ("width", "depth", "height")],
            "model": _in_archive(folder, field("model")),
            "icon": _in_archive(folder, field("icon")),
            "multipart": field("multiPartModel") == "true",
            "model_rotation": _rotation(field("modelRotation")),
            "source": source,
            "catalogue": catalogue,
        })
    return records


def _rotation(text: str) -> list[list[float]] | None:
    """A catalogue's modelRotation (nine numbers, row by row: the turn that stands the model
    in the catalogue's y-up frame; some models are stored z-up), or None when absent or not a
    rotation (then the model is read as stored)."""
    try:
        m = np.array([float(v) for v in text.split()], dtype=np.float64).reshape(3, 3)
    except ValueError:
        return None
    if not np.allclose(m @ m.T, np.eye(3), atol=1e-3) or np.linalg.det(m) < 0:
        return None
    return m.tolist()


def _in_archive(folder: str, path: str) -> str:
    """A catalogue path inside its archive: `/x` from the root, `x` beside the catalogue."""
    return path[1:] if path.startswith("/") else posixpath.normpath(posixpath.join(folder, path))


def local_name(record_id: str) -> str:
    """A folder name for a catalogue id (`Blend Swap CC-0#armchair` -> `Blend_Swap_CC-0_armchair`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", record_id)


def extract_model(zf: zipfile.ZipFile, record: dict, models: Path) -> str:
    """Copy a model's files to models/<id>/ (once); returns the mesh path relative to models' parent.

    A multi-part model owns every file in its folder (OBJ, MTL, textures), as Sweet Home 3D
    reads it; a single-part one is the model file alone.
    """
    dest = models / local_name(record["id"])
    folder = posixpath.dirname(record["model"])
    if not dest.exists():
        prefix = folder + "/" if folder else ""
        members = ([n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
                   if record["multipart"] else [record["model"]])
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        extract_members(zf, members, folder, partial)
        os.replace(partial, dest)  # a killed run never leaves a half-written model folder
    return (dest / posixpath.relpath(record["model"], folder or ".")).relative_to(models.parent).as_posix()


def extract_members(zf: zipfile.ZipFile, members: list[str], folder: str, dest: Path) -> None:
    """Write the zip members under `folder` into dest, refusing any that would land outside it."""
    dest.mkdir(parents=True)
    root = dest.resolve()
    for name in members:
        relative = posixpath.relpath(name, folder) if folder else name
        target = (root / relative).resolve()
        if (name.startswith("/") or ".." in PurePosixPath(name).parts
                or not target.is_relative_to(root) or target == root):
            raise Ulip2Error(f"{zf.filename}: refusing zip member {name!r}: it would be written "
                             f"outside {dest} (a corrupt or malicious archive; fetch it again)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(name) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)


def build_catalogue(root: Path, out: Path) -> list[dict]:
    """Every model of every archive under root, its files extracted; adds `mesh` to each record."""
    from tqdm import tqdm

    records = []
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    for archive in find_archives(root):
        entries = read_catalogues(archive, root)
        with zipfile.ZipFile(archive) as zf:
            for record in tqdm(entries, desc=f"extract {archive.name}", unit="model",
                               file=sys.stderr, dynamic_ncols=True):
                if record["model"] not in zf.NameToInfo:
                    raise Ulip2Error(f"{archive}: catalogue {record['catalogue']} names model "
                                     f"{record['model']!r} that the archive lacks (a damaged download? "
                                     f"delete {out / 'debs'} and rerun)")
                record["mesh"] = extract_model(zf, record, models)
                records.append(record)
    folders = collections.Counter(local_name(r["id"]) for r in records)
    clashes = [name for name, count in folders.items() if count > 1]
    if clashes:
        raise Ulip2Error(f"{root}: catalogue ids that share a folder name under {models}: {clashes[:5]}")
    return records


# ---- classes and split -----------------------------------------------------------------

def load_keyword_map(path: Path = CLASSES_FILE) -> dict:
    """{'classes': {class: [keyword, ...]}, 'exclude': [keyword, ...]} from the data file."""
    data = json.loads(Path(path).read_text())
    return {"classes": data["classes"], "exclude": data.get("exclude", [])}


def classify(name: str, keyword_map: dict) -> str | None:
    """The class a name's head noun names, or None (see sweethome3d_classes.json's notes)."""
    head = _HEAD_END.split(name.lower(), maxsplit=1)[0]
    words = _WORD.findall(head)
    best = None  # (end index, phrase length, class or None)
    labelled = [(c, k) for c, keywords in keyword_map["classes"].items() for k in keywords]
    for label, keyword in labelled + [(None, k) for k in keyword_map["exclude"]]:
        phrase = _WORD.findall(keyword)
        for start in range(len(words) - len(phrase) + 1):
            if words[start:start + len(phrase)] == phrase:
                rank = (start + len(phrase), len(phrase))
                if best is None or rank > best[:2]:
                    best = (*rank, label)
    return None if best is None else best[2]


def assign_classes(names: dict[str, str], keyword_map: dict, min_items: int = MIN_ITEMS
                   ) -> tuple[dict[str, str], dict[str, int]]:
    """id -> class for the ids whose class has >= min_items, and the dropped classes' counts."""
    matched = {i: classify(name, keyword_map) for i, name in names.items()}
    counts = collections.Counter(c for c in matched.values() if c is not None)
    kept = {i: c for i, c in matched.items() if c is not None and counts[c] >= min_items}
    return kept, {c: n for c, n in counts.items() if n < min_items}


def split_by_item(labels: dict[str, str], test_fraction: float = 0.2, seed: int = 0) -> dict[str, str]:
    """id -> 'train' | 'test', stratified: each class sends round(fraction * n) items (>= 1) to test.

    Each class draws from its own seeded generator over its sorted ids, so the split of
    one class does not move when another class gains or loses items.
    """
    by_class = collections.defaultdict(list)
    for item, label in labels.items():
        by_class[label].append(item)
    split = {}
    for label, items in by_class.items():
        items = sorted(items)
        random.Random(f"{seed}:{label}").shuffle(items)
        n_test = max(1, round(test_fraction * len(items)))
        split.update({item: "test" if k < n_test else "train" for k, item in enumerate(items)})
    return split


# ---- the whole recipe ------------------------------------------------------------------

def prepare(out: Path, assets: Path | None = None, seed: int = 0, test_fraction: float = 0.2,
            points: int = POINTS) -> dict:
    """Run every step into `out`; returns the summary that main prints."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(assets).resolve() if assets else fetch(out)
    records = build_catalogue(root, out)

    meshes = {r["id"]: out / r["mesh"] for r in records}
    descriptors, failures = d2.descriptors(meshes, out / "cache", points=points, seed=seed)
    loaded = {r["id"]: r["name"] for r in records if r["id"] not in failures}
    labels, dropped = assign_classes(loaded, load_keyword_map())
    split = split_by_item(labels, test_fraction, seed)
    for record in records:
        record["load_error"] = failures.get(record["id"])
        record["class"] = labels.get(record["id"])
        record["split"] = split.get(record["id"])

    counts = dict(sorted(collections.Counter(labels.values()).items(), key=lambda kv: (-kv[1], kv[0])))
    _write_json(out / "split.json", {
        "seed": seed, "test_fraction": test_fraction,
        "train": sorted(i for i, s in split.items() if s == "train"),
        "test": sorted(i for i, s in split.items() if s == "test")})
    _write_json(out / "catalogue.json", {
        "source": PACKAGES if assets is None else str(root), "points": points, "seed": seed,
        "classes": counts, "records": records})
    for part in ("train", "test"):
        _write_csv(out / f"{part}.csv", [(r["mesh"], r["class"]) for r in records if r["split"] == part])

    test = [i for i in split if split[i] == "test"]
    train = [i for i in split if split[i] == "train"]
    top1 = d2.nearest_neighbour_top1([descriptors[i] for i in train], [labels[i] for i in train],
                                     [descriptors[i] for i in test], [labels[i] for i in test])
    return {"models": len(records), "labelled": len(labels), "classes": counts, "dropped": dropped,
            "train": len(train), "test": len(test), "failures": failures, "d2_top1": top1}


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(sorted(rows))
    os.replace(tmp, path)


def read_catalogue(data: Path) -> dict:
    """DATA/catalogue.json as `prepare` wrote it."""
    try:
        return json.loads((data / "catalogue.json").read_text())
    except (OSError, ValueError) as exc:
        raise Ulip2Error(f"{data}/catalogue.json: not readable ({exc}); make it with: "
                         f"python -m training.recipes.sweethome3d prepare --out {data}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.sweethome3d", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="fetch, catalogue, check, classes, split, D2 baseline")
    prep.add_argument("--out", type=Path, required=True, help="working folder (outside the repository)")
    prep.add_argument("--assets", type=Path, help="a folder with sweethome3d.jar and *.sh3f (skips apt-get)")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--test-fraction", type=float, default=0.2)
    prep.add_argument("--points", type=int, default=POINTS, help="points sampled per model")
    args = parser.parse_args(argv)
    try:
        summary = prepare(args.out, args.assets, args.seed, args.test_fraction, args.points)
    except Ulip2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"models: {summary['models']}  labelled: {summary['labelled']} in {len(summary['classes'])} classes "
          f"(train {summary['train']}, test {summary['test']})")
    for label, count in summary["classes"].items():
        print(f"  {label:<16} {count}")
    print(f"dropped (< {MIN_ITEMS} items): {summary['dropped'] or 'none'}")
    print(f"load failures: {len(summary['failures'])}")
    for item, reason in summary["failures"].items():
        print(f"  {item}: {reason}")
    print(f"D2 nearest-neighbour top-1 on the test split: {summary['d2_top1']:.4f}")
    print(f"wrote {args.out}/catalogue.json, split.json, train.csv, test.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
