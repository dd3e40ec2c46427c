"""Zero-shot classification: the numbers technical staff trust a model by.

Loaders for the layouts ULIP-2 evaluates on, and for a studio's own labelled assets:

    folder of meshes    PATH/<label>/<mesh files>          (the subfolder names the label)
    CSV                 path,label rows (paths relative to the CSV)
    ModelNet40 (10k)    PATH/modelnet40_colored_10k_pc.npy (dicts with 'xyz'),
                        modelnet40_test_split_10k_colored.json ([{"category": ...}]),
                        modelnet40_shape_names.txt; colour is ULIP-2's 0.4 grey
    Objaverse-LVIS      PATH/lvis.json ({uid: npy path}), objaverse_lvis_metadata.json
                        ({"value_to_key_mapping": {uid: category}, "all_keys": [...]}), npy
                        dicts with xyz, rgb; class names go into the prompts verbatim, in
                        all_keys' order, as ULIP's test puts them ("pan_(metal_container)")
    ScanObjectNN        an .h5 file with 'data' (M, N, 3) and 'label' (M,), the 15 classes

The ModelNet40 and LVIS .npy files hold pickled dicts. Nothing from a data set is
unpickled as such: a restricted unpickler admits numpy arrays, dtypes and plain containers
and refuses everything else (a pickle that calls os.system is an error naming the file).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np

from core.errors import AssetError, Ulip2Error
from core.spaces.vocabularies import ULIP_TEMPLATES
from core.sampling import DEFAULT_GREY, normalize_unit_sphere
from core.spaces.ranking import zero_shot

from .augment import subsample

SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
                        "bed", "pillow", "sink", "sofa", "toilet")


@dataclasses.dataclass
class EvalSet:
    name: str
    points: list[np.ndarray]      # (N_i, 6) xyz on the unit sphere, rgb in 0..1
    labels: list[str]
    classnames: list[str]
    failed: list[dict] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)  # {"path", "reason"}: files not read
    verbatim: bool = False        # class names enter the prompts as written (else prompt_name)


def _with_rgb(xyz: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
    xyz = normalize_unit_sphere(np.asarray(xyz, np.float32))[0]
    rgb = np.full_like(xyz, DEFAULT_GREY) if rgb is None else np.asarray(rgb, np.float32)
    if rgb.size and rgb.max() > 1.0:  # some exports store 0..255
        rgb = rgb / 255.0
    return np.concatenate([xyz, rgb], axis=1)


def _from_meshes(name: str, items: list[tuple[Path, str]], num_points: int, seed: int) -> EvalSet:
    from core.meshio import load_points

    points, labels, failed = [], [], []
    for path, label in items:
        try:
            points.append(load_points(path, num_points, seed=seed)[:, :6])
            labels.append(label)
        except AssetError as exc:
            failed.append({"path": str(path), "error": exc.reason})
    return EvalSet(name, points, labels, sorted(set(label for _, label in items)), failed)


def load_mesh_folder(path: Path, num_points: int, seed: int = 0) -> EvalSet:
    from core.formats import TRIMESH_FORMATS, walk

    found = walk([path], formats=TRIMESH_FORMATS, command="ulip2 eval")  # it samples without Blender
    items, skipped = [], found.skipped
    root = Path(os.path.abspath(path))
    for file in found.files:
        if file.parent == root:
            skipped.append({"path": str(file), "reason": f"not in a label subfolder ({path}/<label>/{file.name})"})
        else:
            items.append((file, file.relative_to(root).parts[0]))
    if not items:
        more = f", and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        first = f" (skipped {skipped[0]['path']}: {skipped[0]['reason']}{more})" if skipped else ""
        raise Ulip2Error(f"{path}: no labelled meshes: an evaluation folder holds one subfolder per label "
                         f"({path}/chair/*.glb, {path}/lamp/*.obj, ...); or give a CSV of path,label, a ModelNet40 "
                         f"or Objaverse-LVIS folder, or a ScanObjectNN .h5 file{first}")
    return dataclasses.replace(_from_meshes(path.name, items, num_points, seed), skipped=skipped)


def load_csv(path: Path, num_points: int, seed: int = 0) -> EvalSet:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise Ulip2Error(f"{path}: a labelled CSV needs 'path' and 'label' columns")
    return _from_meshes(path.stem, [(path.parent / r["path"], r["label"]) for r in rows], num_points, seed)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays (object arrays of dicts of arrays included) and nothing else."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays and plain containers are read")


def load_npy(path: Path):
    """An .npy file's array; an object array (ULIP's dicts of xyz, rgb) through _ArraysOnly."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as fh:
            version = npy_format.read_magic(fh)
            header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            if not dtype.hasobject:
                fh.seek(0)
                return np.load(fh, allow_pickle=False)
            array = _ArraysOnly(fh).load()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise Ulip2Error(f"{path}: not a readable .npy of arrays ({exc})") from None
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise Ulip2Error(f"{path}: the pickled payload is not the {shape} array its header names")
    return array


def _cloud(item, path: Path) -> dict:
    """One ULIP point-cloud dict ({'xyz': (N, 3)[, 'rgb']}), checked."""
    if not isinstance(item, dict) or not isinstance(item.get("xyz"), np.ndarray) or item["xyz"].ndim != 2:
        raise Ulip2Error(f"{path}: expected dicts with an 'xyz' (N, 3) array")
    return item


def load_modelnet40(path: Path) -> EvalSet:
    clouds = [_cloud(c, path / "modelnet40_colored_10k_pc.npy") for c in load_npy(path / "modelnet40_colored_10k_pc.npy")]
    split = json.loads((path / "modelnet40_test_split_10k_colored.json").read_text())
    names = (path / "modelnet40_shape_names.txt").read_text().split()
    return EvalSet("modelnet40", [_with_rgb(c["xyz"]) for c in clouds], [s["category"] for s in split], names)


def load_objaverse_lvis(path: Path) -> EvalSet:
    files = json.loads((path / "lvis.json").read_text())
    metadata = json.loads((path / "objaverse_lvis_metadata.json").read_text())
    category = metadata["value_to_key_mapping"]
    points, labels = [], []
    for uid, rel in files.items():
        cloud = path / rel
        if not cloud.resolve().is_relative_to(path.resolve()):
            raise Ulip2Error(f"{path / 'lvis.json'}: {rel!r} leaves the data set's folder; refusing it")
        data = _cloud(load_npy(cloud).item(), cloud)
        points.append(_with_rgb(data["xyz"], data.get("rgb")))
        labels.append(category[uid])
    classnames = list(metadata.get("all_keys") or sorted(set(category.values())))
    return EvalSet("objaverse-lvis", points, labels, classnames, verbatim=True)


def load_scanobjectnn(path: Path) -> EvalSet:
    import h5py

    with h5py.File(path, "r") as fh:
        data, label = fh["data"][:], fh["label"][:].reshape(-1)
    return EvalSet("scanobjectnn", [_with_rgb(cloud[:, :3]) for cloud in data],
                   [SCANOBJECTNN_CLASSES[int(i)] for i in label], list(SCANOBJECTNN_CLASSES))


def load_eval_set(path: str | os.PathLike, num_points: int, seed: int = 0) -> EvalSet:
    """Recognise the layout at `path` and load it (meshes are sampled with `num_points`)."""
    path = Path(path)
    if path.suffix == ".csv":
        return load_csv(path, num_points, seed)
    if path.suffix in (".h5", ".hdf5"):
        return load_scanobjectnn(path)
    if not path.is_dir():
        raise Ulip2Error(f"{path}: not a folder, .csv or .h5 evaluation set")
    if (path / "modelnet40_colored_10k_pc.npy").is_file():
        return load_modelnet40(path)
    if (path / "lvis.json").is_file():
        return load_objaverse_lvis(path)
    return load_mesh_folder(path, num_points, seed)


def evaluate(encoder, space, evalset: EvalSet, seed: int = 0) -> dict:
    """Zero-shot accuracy of a bundle's encoder on an EvalSet, with ULIP's prompt ensembles."""
    from core.spaces.vocabularies import prompt_name

    if space.name != encoder.bundle.space:
        raise Ulip2Error(f"bundle is in space {encoder.bundle.space!r}, not {space.name!r}")
    if not evalset.points:
        raise Ulip2Error(f"{evalset.name}: nothing to evaluate ({len(evalset.failed)} files failed)")
    clouds = np.stack([subsample(p, encoder.num_points, np.random.default_rng(seed)) for p in evalset.points])
    embeddings = encoder.embed_points(clouds)
    names = evalset.classnames if evalset.verbatim else [prompt_name(c) for c in evalset.classnames]
    class_vectors = space.embed_prompts(names,
                                        known=encoder.bundle.carried_prompts(ULIP_TEMPLATES))
    return {"set": evalset.name, **zero_shot(embeddings, evalset.labels, class_vectors, evalset.classnames),
            "failed": evalset.failed, "skipped": evalset.skipped}
