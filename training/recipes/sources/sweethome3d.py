"""Sweet Home 3D's furniture catalogues as a corpus source.

The catalogue recipe (training.recipes.sweethome3d prepare) fetches, extracts and
classifies the models; this source reads what it wrote (catalogue.json and models/), so
the corpus keeps that recipe's split by item: its test items are the ones today's default
was scored on. Texts are the catalogue's name, category, tags and size (what a studio
library knows of an asset); labels are the recipe's keyword classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from . import SourceError, SourceObject

NAME = "sweethome3d"
PACKAGES = ("sweethome3d-furniture", "sweethome3d")


def prepare(root: Path) -> None:
    """Run the catalogue recipe into `root` (it fetches and unpacks the packages itself)."""
    from training.recipes.sweethome3d import prepare as prepare_catalogue

    if not (root / "catalogue.json").is_file():
        prepare_catalogue(root)


def objects(root: Path) -> Iterator[SourceObject]:
    from training.recipes.default_model import captions_for
    from training.recipes.sweethome3d import read_catalogue

    for record in read_catalogue(root)["records"]:
        if record.get("load_error"):
            continue
        mesh = root / record["mesh"]
        yield SourceObject(
            source=NAME, id=record["id"], name=record["name"], label=record.get("class"),
            texts=captions_for(record), files=[record["mesh"]],
            load=lambda mesh=mesh, turn=record.get("model_rotation"): _load(mesh, turn),
            split=record.get("split"))


def _load(mesh: Path, rotation: list[list[float]] | None = None) -> list:
    """The OBJ's meshes in world space (OBJ is y-up, as glTF), with their materials, turned by
    the catalogue's modelRotation when it has one (a few models are stored z-up)."""
    import trimesh

    try:
        scene = trimesh.load_scene(mesh, process=False)
    except Exception as error:  # trimesh raises anything from KeyError to struct.error
        raise SourceError(f"{mesh}: cannot read ({type(error).__name__}: {error})") from None
    meshes = [m for m in scene.dump() if isinstance(m, trimesh.Trimesh) and len(m.faces)]
    if not meshes:
        raise SourceError(f"{mesh}: no triangles")
    if rotation is not None:
        import numpy as np

        turn = np.eye(4)
        turn[:3, :3] = rotation
        for part in meshes:
            part.apply_transform(turn)
    return meshes
