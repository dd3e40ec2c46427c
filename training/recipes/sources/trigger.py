"""Trigger Rally (trigger-rally-data): the rally cars of its data.zip, body and wheels.

Each vehicles/<car>/<car>.vehicle (XML) names the car, its class and type, its body model
(an OBJ + MTL + PNG beside it) with a scale, position and orientation, and the wheel model
with the wheels' positions and radii. The car is assembled as the game's car-choice screen
draws it (src/Trigger/render.cpp): body = part position + orientation x (scale x model);
wheel = part position + orientation x (wheel position + wheelscale x radius x wheel model).
The game's frame is z up, x right, y forward (the XML's dimensions, the renderer's
rotate(90, -1, 0, 0)); it is turned to the glTF frame.

Nothing is extracted: the archive's members are read into memory by name (bounded); trimesh
reads the OBJ's geometry from bytes, and the texture is found as the game finds it
(src/PEngine/model.cpp): the first map_Kd of the OBJ's mtllib, for the whole model, usemtl
ignored. mtllib and map_Kd must name files of the car's own folder, else SourceError. The
game draws cars in a white material, so the MTL's diffuse colour is not applied.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

import numpy as np
import trimesh
from PIL import Image

from training.recipes.sources import (
    MAX_FILE_BYTES, SourceError, SourceObject, bounded_image, check_counts, sentence_words,
    z_up_to_y_up)

NAME = "trigger-rally"
PACKAGES = ("trigger-rally-data",)
ARCHIVE = Path("usr/share/games/trigger-rally/data.zip")
VEHICLES = "vehicles/"
MIN_ITEMS = 5
MAX_MEMBERS = 100_000  # members in the archive (the game's has about 2,100)
MAX_VEHICLE_BYTES = 1 << 20  # one .vehicle XML (the game's are 3 KB)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Wheel:
    pos: np.ndarray    # in the part's frame
    radius: float


@dataclasses.dataclass
class Part:
    model: str | None  # a file in the car's folder
    scale: float
    pos: np.ndarray
    orientation: np.ndarray  # quaternion w, x, y, z
    wheels: list[Wheel]


@dataclasses.dataclass
class Vehicle:
    member: str        # the .vehicle member
    name: str          # "Cordo"
    vclass: str        # "Kit-Car"
    vtype: str         # "car"
    wheel_model: str | None
    wheel_scale: float
    parts: list[Part]

    @property
    def folder(self) -> str:
        return self.member.rsplit("/", 1)[0] + "/"


# ---- the archive ---------------------------------------------------------------------------

def _open(archive: Path) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{archive}: not a readable zip ({exc})") from None
    if len(zf.infolist()) > MAX_MEMBERS:
        raise SourceError(f"{archive}: {len(zf.infolist())} members is above the limit ({MAX_MEMBERS})")
    return zf


def _safe_member(name: str) -> bool:
    """Member names are data, not paths: refuse absolute ones, '..' and backslashes."""
    path = PurePosixPath(name)
    return not (path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name)


def _read_member(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_FILE_BYTES:
        raise SourceError(f"{archive}:{info.filename}: {info.file_size} bytes is above the "
                          f"limit ({MAX_FILE_BYTES})")
    try:
        return zf.read(info)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise SourceError(f"{archive}:{info.filename}: not readable ({exc})") from None


def _folder_members(archive: Path, zf: zipfile.ZipFile, folder: str) -> dict[str, bytes]:
    """The car folder's files, by their names inside it (files in subfolders are not used)."""
    members, total = {}, 0
    for info in zf.infolist():
        name = info.filename
        if info.is_dir() or not name.startswith(folder) or "/" in name[len(folder):]:
            continue
        if not _safe_member(name):
            raise SourceError(f"{archive}:{name}: an unsafe member name")
        total += info.file_size
        if total > MAX_FILE_BYTES:
            raise SourceError(f"{archive}:{folder}: the folder is above {MAX_FILE_BYTES} bytes")
        members[name[len(folder):]] = _read_member(archive, zf, info)
    return members


# ---- .vehicle files ------------------------------------------------------------------------

def read_vehicle(archive: Path, member: str, data: bytes) -> Vehicle:
    """A .vehicle's metadata and parts; SourceError naming the member if it is not one."""
    where = f"{archive}:{member}"
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise SourceError(f"{where}: not readable XML ({exc})") from None
    if root.tag != "vehicle":
        raise SourceError(f"{where}: the root element is <{root.tag}>, not <vehicle>")
    gen = root.find("genparams")
    gen = gen if gen is not None else ElementTree.Element("genparams")
    parts = [Part(model=_file_name(where, p.get("model")),
                  scale=_numbers(where, p, "scale", 1, "1")[0],
                  pos=_numbers(where, p, "pos", 3, "0, 0, 0"),
                  orientation=_numbers(where, p, "orientation", 4, "1, 0, 0, 0"),
                  wheels=[Wheel(_numbers(where, w, "pos", 3, "0, 0, 0"),
                                _numbers(where, w, "radius", 1, "0.3")[0])
                          for w in p.findall("wheel")])
             for p in root.findall("part")]
    if not any(p.model for p in parts):
        raise SourceError(f"{where}: no part names a model")
    return Vehicle(member, root.get("name", "").strip(), root.get("class", "").strip(),
                   root.get("type", "").strip().lower(), _file_name(where, gen.get("wheelmodel")),
                   _numbers(where, gen, "wheelscale", 1, "1")[0], parts)


def _numbers(where: str, element, attribute: str, count: int, default: str) -> np.ndarray:
    text = element.get(attribute, default)
    try:
        values = np.array([float(x) for x in text.split(",")], dtype=np.float64)
    except ValueError:
        values = np.array([])
    if len(values) != count or not np.isfinite(values).all():
        raise SourceError(f"{where}: {attribute}={text!r} is not {count} number(s)")
    return values


def _file_name(where: str, name: str | None) -> str | None:
    """A model named by a .vehicle: a plain file name in the car's folder, or refused."""
    if name is None or not name.strip():
        return None
    name = name.strip()
    if "/" in name or "\\" in name or name in (".", ".."):
        raise SourceError(f"{where}: model {name!r} is not a file in the car's folder")
    return name


# ---- models --------------------------------------------------------------------------------

def _reference(where: str, text: bytes, keyword: bytes, members: dict) -> str | None:
    """The file a `keyword` line (mtllib, map_Kd) names; it must be one of the car's folder."""
    for line in text.splitlines():
        words = line.strip().split(maxsplit=1)
        if len(words) == 2 and words[0] == keyword:
            name = words[1].decode("utf-8", "replace").strip()
            if "/" in name or "\\" in name or name not in members:
                raise SourceError(f"{where}: {keyword.decode()} {name!r} is not a file in the car's folder")
            return name
    return None


def _texture(where: str, members: dict[str, bytes], obj: bytes):
    """The model's one texture as the game finds it: the first map_Kd of its mtllib
    (the game ignores usemtl, and some cars name a material their MTL lacks)."""
    mtl = _reference(where, obj, b"mtllib", members)
    image = _reference(f"{where}: {mtl}", members[mtl], b"map_Kd", members) if mtl else None
    if image is None:
        return None
    try:
        return bounded_image(Image.open(io.BytesIO(members[image])))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SourceError(f"{where}: texture {image!r} is not a readable image ({exc})") from None


def _model_meshes(where: str, members: dict[str, bytes], model: str) -> list[trimesh.Trimesh]:
    """An OBJ of the car's folder as meshes in the game frame, with the model's texture."""
    if model not in members:
        raise SourceError(f"{where}: model {model!r} is missing from the car's folder")
    data = members[model]
    check_counts(where, data.count(b"\nv "), data.count(b"\nf "))
    image = _texture(where, members, data)
    try:
        scene = trimesh.load_scene(io.BytesIO(data), file_type="obj", skip_materials=True)
    except (IndexError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SourceError(f"{where}: not a readable OBJ ({type(exc).__name__}: {exc})") from None
    meshes = [g for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not meshes:
        raise SourceError(f"{where}: no triangles")
    for mesh in meshes:
        uv = getattr(mesh.visual, "uv", None)
        if image is not None and uv is not None:
            # white diffuse: the game draws cars with a white material under the texture
            material = trimesh.visual.material.SimpleMaterial(image=image, diffuse=(255, 255, 255, 255))
            mesh.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return meshes


def _rotation(q: np.ndarray) -> np.ndarray:
    """The inverse of unit quaternion (w, x, y, z)'s rotation, as the renderer applies it."""
    w, x, y, z = q / np.linalg.norm(q)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    return r.T


def _placed(mesh: trimesh.Trimesh, scale: float, turn: np.ndarray, offset: np.ndarray) -> trimesh.Trimesh:
    """A copy of a game-frame mesh scaled, turned and moved, then in the glTF frame."""
    vertices = (mesh.vertices * scale) @ turn.T + offset
    return trimesh.Trimesh(z_up_to_y_up(vertices), mesh.faces.copy(), visual=mesh.visual.copy(),
                           process=False)


def load_vehicle(archive: Path, vehicle: Vehicle) -> list[trimesh.Trimesh]:
    with _open(archive) as zf:
        members = _folder_members(archive, zf, vehicle.folder)
    where = f"{archive}:{vehicle.folder}"
    wheel = (_model_meshes(where + vehicle.wheel_model, members, vehicle.wheel_model)
             if vehicle.wheel_model else [])
    meshes = []
    for part in vehicle.parts:
        turn = _rotation(part.orientation)
        if part.model:
            body = _model_meshes(where + part.model, members, part.model)
            meshes += [_placed(m, part.scale, turn, part.pos) for m in body]
        for w in part.wheels:
            meshes += [_placed(m, vehicle.wheel_scale * w.radius, turn, part.pos + turn @ w.pos)
                       for m in wheel]
    return meshes


# ---- objects -------------------------------------------------------------------------------

def vehicles(archive: Path) -> tuple[list[Vehicle], list[str]]:
    """The archive's cars, and the .vehicle files that could not be read as 'member: reason'."""
    found, failures = [], []
    with _open(archive) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            name = info.filename
            if not (name.startswith(VEHICLES) and name.endswith(".vehicle")):
                continue
            try:
                if not _safe_member(name):
                    raise SourceError(f"{archive}:{name}: an unsafe member name")
                if info.file_size > MAX_VEHICLE_BYTES:
                    raise SourceError(f"{archive}:{name}: {info.file_size} bytes is above the "
                                      f"limit for a .vehicle ({MAX_VEHICLE_BYTES})")
                found.append(read_vehicle(archive, name, _read_member(archive, zf, info)))
            except SourceError as exc:
                failures.append(str(exc))
    return found, failures


def vehicle_texts(vehicle: Vehicle, wheels: int) -> list[str]:
    kind = vehicle.vtype or "vehicle"
    of_class = f" of the {vehicle.vclass} class" if vehicle.vclass else ""
    return [f"a {kind}",
            f"a {vehicle.name} rally {kind}{of_class}",
            f"a {kind} from the racing game Trigger Rally",
            f"a 3D model of a {kind} with {wheels} wheels"]


def objects(root: Path) -> Iterator[SourceObject]:
    archive = Path(root) / ARCHIVE
    if not archive.is_file():
        raise SourceError(f"{archive}: missing; unpack {', '.join(PACKAGES)} into {root}")
    found, failures = vehicles(archive)
    for failure in failures:
        log.warning("skipped %s", failure)
    counts = collections.Counter(v.vtype for v in found)
    for vehicle in found:
        wheels = sum(len(p.wheels) for p in vehicle.parts)
        models = sorted({m for m in [vehicle.wheel_model, *(p.model for p in vehicle.parts)] if m})
        yield SourceObject(
            source=NAME, id=vehicle.folder.rstrip("/"),
            name=" ".join(w for w in (vehicle.name, vehicle.vclass) if w) or sentence_words(vehicle.folder),
            label=vehicle.vtype if vehicle.vtype and counts[vehicle.vtype] >= MIN_ITEMS else None,
            texts=vehicle_texts(vehicle, wheels),
            files=[f"{ARCHIVE.as_posix()}:{vehicle.member}"]
                  + [f"{ARCHIVE.as_posix()}:{vehicle.folder}{m}" for m in models],
            load=lambda v=vehicle: load_vehicle(archive, v))
