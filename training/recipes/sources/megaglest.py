"""MegaGlest (megaglest-data): units, buildings, resources and tileset objects, from G3D.

Under usr/share/games/megaglest/:
  techs/<tech>/factions/<faction>/units/<unit>/<unit>.xml   a unit or building: its skills
      name the G3D model of each animation (standing, walking, attacking, dying...); the
      object is the model of its first "stop" skill, so each unit counts once
  techs/<tech>/resources/<resource>/<resource>.xml          gold and stone deposits
  tilesets/<tileset>/<tileset>.xml                          the scenery objects (trees, rocks,
      statues...), in the map editor's ten numbered slots

G3D (source/shared_lib/include/graphics/model_header.h and model.cpp of MegaGlest, read
for the layout; this reader is written from that description): "G3D" + a version byte.
  v4: uint16 mesh count, uint8 type (0: morph mesh); per mesh a 116-byte header (name[64],
      frames, vertices, indices, diffuse rgb, specular rgb, specular power, opacity,
      properties, texture flags), one 64-byte path per texture flag bit 0..4, then
      frames x vertices x xyz, the same for normals, uv (when any texture), uint32 indices.
  v3, v2: uint32 mesh count; a 92-byte header (frame counts for vertices, normals, uv and
      colours, point and index counts, flags, one texture name), vertices, normals, uv
      frames, diffuse rgb + opacity and extra colour frames, indices.
All little-endian. Frame 0 is taken. Texture names are lowered, as the engine opens them.

Frame: G3D is already y-up with front faces counter-clockwise: on the packaged data units,
buildings and trees stand on y = 0 and reach up along +y (swordman 0..2.1, castle 0..6.4,
tree 0..4.3), and in three meshes of four over 99% of the triangles wind counter-clockwise
about their stored normals. So vertices are used as they are; units then face +z, glTF's front,
as far as the dragon's head and the catapult's crew (behind it, at -z) show.

Textures are read relative to the model's folder and only inside the asset's folder (its
faction, resources or tileset folder, symbolic links resolved inside the package); a
missing one fails the load. Where a mesh has team colour its texture's alpha marks the
team-colour areas, so it stays opaque; elsewhere alpha cuts the surface out (leaves).
Meshes without a texture take their diffuse colour.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import posixpath
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import trimesh

from training.recipes.sources import SourceError, SourceObject, check_counts, read_bounded, sentence_words
from training.recipes.sources.rts_meshes import (bleed_cutouts, build_mesh, checked_faces,
                                                 decode_image, join_words, labels_for, with_article)
from training.recipes.sweethome3d import classify, load_keyword_map

NAME = "megaglest"
PACKAGES = ("megaglest-data",)
GAME = "usr/share/games/megaglest"
CLASSES_FILE = Path(__file__).with_name("megaglest_classes.json")

_MESH_TEXTURES = 5   # diffuse, specular, normal, reflection, colour mask: flag bits 0..4
_NAME_BYTES = 64
_V4_HEADER = struct.Struct("<64s3I3f3f2f2I")
_V3_HEADER = struct.Struct("<7I64s")
_V2_HEADER = struct.Struct("<6I3B64sx")  # the C struct is padded to 92 bytes
_TEAM_COLOUR_V4, _TEAM_COLOUR_V3, _NO_TEXTURE_V3 = 1, 4, 1


# ---- the G3D reader ----------------------------------------------------------------------

@dataclasses.dataclass
class G3DMesh:
    name: str
    vertices: np.ndarray      # (V, 3) float32, frame 0
    faces: np.ndarray         # (F, 3) int64, checked against V
    uv: np.ndarray | None     # (V, 2) float32, OpenGL (v = 0 at the image's bottom row)
    texture: str | None       # the diffuse map's file name, relative to the model's folder
    diffuse: tuple            # rgb 0..1
    opacity: float
    team_colour: bool         # the texture's alpha marks team colour, not transparency
    two_sided: bool = False


class _Cursor:
    """Reads a G3D byte string front to back; running out names the file and the part."""

    def __init__(self, data: bytes, shown: str):
        self.data, self.shown, self.offset = data, shown, 0

    def take(self, size: int, what: str) -> int:
        start, left = self.offset, len(self.data) - self.offset
        if size > left:
            raise SourceError(f"{self.shown}: truncated in {what} (needs {size} bytes at "
                              f"offset {start}, {left} left)")
        self.offset += size
        return start

    def unpack(self, layout: struct.Struct, what: str) -> tuple:
        return layout.unpack_from(self.data, self.take(layout.size, what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.data, dtype, count, self.take(count * item, what))

    def text(self, what: str) -> str:
        raw = self.data[self.take(_NAME_BYTES, what):self.offset]
        return raw.split(b"\0", 1)[0].decode("latin-1")


def read_g3d(data: bytes, shown: str) -> list[G3DMesh]:
    """The meshes of a G3D v2/v3/v4 file (frame 0); SourceError on anything malformed."""
    if data[:3] != b"G3D" or len(data) < 4:
        raise SourceError(f"{shown}: not a G3D model (no 'G3D' signature)")
    version = data[3]
    readers = {4: _mesh_v4, 3: _mesh_v3, 2: _mesh_v2}
    if version not in readers:
        raise SourceError(f"{shown}: G3D version {version} is not one of 2, 3, 4")
    cursor = _Cursor(data, shown)
    cursor.take(4, "file header")
    if version == 4:
        count, kind = cursor.unpack(struct.Struct("<HB"), "model header")
        if kind != 0:
            raise SourceError(f"{shown}: model type {kind} is not a morph mesh (0)")
    else:
        (count,) = cursor.unpack(struct.Struct("<I"), "model header")
    # Every mesh has a header of at least 92 bytes: a count the rest cannot hold is corrupt.
    if count * _V3_HEADER.size > len(data) - cursor.offset:
        raise SourceError(f"{shown}: {count} meshes cannot fit in {len(data)} bytes")
    return [readers[version](cursor, index) for index in range(count)]


def _mesh_v4(cursor: _Cursor, index: int) -> G3DMesh:
    where = f"mesh {index}"
    (name, frames, n_vertices, n_indices, *colours, _power, opacity, properties,
     textures) = cursor.unpack(_V4_HEADER, f"{where} header")
    _check_sizes(cursor.shown, where, frames, n_vertices, n_indices)
    maps = {bit: cursor.text(f"{where} texture path") for bit in range(_MESH_TEXTURES)
            if textures >> bit & 1}
    vertices = cursor.array("<f4", frames * n_vertices * 3, f"{where} vertices")
    cursor.take(frames * n_vertices * 12, f"{where} normals")
    uv = cursor.array("<f4", n_vertices * 2, f"{where} uv") if textures else None
    indices = cursor.array("<u4", n_indices, f"{where} indices")
    return _mesh(cursor.shown, where, name.split(b"\0", 1)[0].decode("latin-1"), vertices,
                 n_vertices, indices, uv, maps.get(0), tuple(colours[:3]), opacity,
                 team_colour=bool(properties & _TEAM_COLOUR_V4), two_sided=bool(properties & 2))


def _mesh_v3(cursor: _Cursor, index: int) -> G3DMesh:
    where = f"mesh {index}"
    (frames, normal_frames, uv_frames, colour_frames, n_vertices, n_indices, properties,
     texture) = cursor.unpack(_V3_HEADER, f"{where} header")
    textured = not properties & _NO_TEXTURE_V3
    return _old_mesh(cursor, where, frames, normal_frames, uv_frames, colour_frames, n_vertices,
                     n_indices, texture if textured else None, bool(properties & _TEAM_COLOUR_V3))


def _mesh_v2(cursor: _Cursor, index: int) -> G3DMesh:
    where = f"mesh {index}"
    (frames, normal_frames, uv_frames, colour_frames, n_vertices, n_indices, textured,
     _primitive, _cull, texture) = cursor.unpack(_V2_HEADER, f"{where} header")
    if textured and uv_frames != 1:
        raise SourceError(f"{cursor.shown}: {where} has {uv_frames} uv frames (v2 allows 1)")
    return _old_mesh(cursor, where, frames, normal_frames, uv_frames, colour_frames, n_vertices,
                     n_indices, texture if textured else None, False)


def _old_mesh(cursor: _Cursor, where: str, frames: int, normal_frames: int, uv_frames: int,
              colour_frames: int, n_vertices: int, n_indices: int, texture: bytes | None,
              team_colour: bool) -> G3DMesh:
    """The body shared by v2 and v3 after their headers."""
    shown = cursor.shown
    _check_sizes(shown, where, frames, n_vertices, n_indices)
    if normal_frames != frames or colour_frames < 1 or (texture is not None and uv_frames < 1):
        raise SourceError(f"{shown}: {where} has inconsistent frame counts (vertices {frames}, "
                          f"normals {normal_frames}, uv {uv_frames}, colours {colour_frames})")
    vertices = cursor.array("<f4", frames * n_vertices * 3, f"{where} vertices")
    cursor.take(frames * n_vertices * 12, f"{where} normals")
    uv = None
    if texture is not None:
        uv = cursor.array("<f4", n_vertices * 2, f"{where} uv")
        cursor.take((uv_frames - 1) * n_vertices * 8, f"{where} uv frames")
    diffuse = tuple(cursor.array("<f4", 4, f"{where} colour"))
    cursor.take((colour_frames - 1) * 16, f"{where} colour frames")
    indices = cursor.array("<u4", n_indices, f"{where} indices")
    name = None if texture is None else texture.split(b"\0", 1)[0].decode("latin-1")
    return _mesh(shown, where, "", vertices, n_vertices, indices, uv, name, diffuse[:3],
                 diffuse[3], team_colour=team_colour)


def _check_sizes(shown: str, where: str, frames: int, n_vertices: int, n_indices: int) -> None:
    check_counts(f"{shown} ({where})", n_vertices, n_indices // 3)
    if n_indices % 3:
        raise SourceError(f"{shown}: {where} has {n_indices} indices, not a multiple of 3")
    if n_vertices and not frames:
        raise SourceError(f"{shown}: {where} has vertices but no frames")


def _mesh(shown, where, name, vertices, n_vertices, indices, uv, texture, diffuse, opacity, *,
          team_colour, two_sided=False) -> G3DMesh:
    faces = checked_faces(indices, n_vertices, f"{shown} ({where})")
    return G3DMesh(name=name, vertices=vertices[:n_vertices * 3].reshape(-1, 3), faces=faces,
                   uv=None if uv is None else uv.reshape(-1, 2),
                   texture=texture.lower() if texture else None,
                   diffuse=tuple(float(c) for c in diffuse), opacity=float(opacity),
                   team_colour=team_colour, two_sided=two_sided)


# ---- one model with its textures ---------------------------------------------------------

def inside(root: Path, tree: str, path: str, shown: str) -> Path:
    """root/path for a path relative to root that stays in the folder `tree` (also relative
    to root), symbolic links included; SourceError otherwise."""
    normal = posixpath.normpath(path)
    if not normal.startswith(tree.rstrip("/") + "/"):
        raise SourceError(f"{shown}: {path!r} leaves the asset's folder {tree}")
    full = root / normal
    try:
        full.resolve().relative_to(root.resolve())
    except ValueError:
        raise SourceError(f"{shown}: {path!r} links outside {root}") from None
    return full


def load_model(root: Path, model: str, tree: str) -> list[trimesh.Trimesh]:
    """The meshes of root/model (a G3D under the asset folder `tree`), y-up, textured."""
    meshes = read_g3d(read_bounded(inside(root, tree, model, model), model), model)
    folder = posixpath.dirname(model)
    images: dict = {}
    out = []
    for mesh in meshes:
        if not len(mesh.faces):
            continue
        image = None
        if mesh.texture is not None and mesh.uv is not None:
            key = (mesh.texture, mesh.team_colour)
            if key not in images:
                images[key] = _texture(root, tree, folder, mesh.texture, model,
                                       cut_out=not mesh.team_colour)
            image = images[key]
        out.append(build_mesh(mesh.vertices, mesh.faces, uv=mesh.uv, image=image,
                              colour=(*mesh.diffuse, mesh.opacity),
                              alpha_mask=not mesh.team_colour, two_sided=mesh.two_sided,
                              name=mesh.name))
    if not out:
        raise SourceError(f"{model}: no triangles")
    return out


def _texture(root: Path, tree: str, folder: str, name: str, model: str, cut_out: bool):
    """A mesh's texture; cut_out: its alpha is transparency (with team colour it is the
    team-colour mask, and the colour under it stays)."""
    path = posixpath.join(folder, name)
    image = decode_image(read_bounded(inside(root, tree, path, model), path), path)
    return bleed_cutouts(image) if cut_out else image


def _fingerprint(root: Path, model: str, tree: str) -> tuple:
    """What makes two models the same object: the bytes of the model and of its textures
    (packages link or copy shared models and textures between factions and tilesets)."""
    try:
        data = read_bounded(inside(root, tree, model, model), model)
        folder = posixpath.dirname(model)
        textures = sorted({m.texture for m in read_g3d(data, model) if m.texture})
        return (_digest(data), *(_digest(read_bounded(inside(root, tree, path, model), path))
                                 for path in (posixpath.join(folder, t) for t in textures)))
    except SourceError:
        return (model,)  # kept apart; its load names the problem


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# ---- the catalogue -----------------------------------------------------------------------

@dataclasses.dataclass
class _Entry:
    id: str
    name: str
    texts: list[str]
    files: list[str]
    model: str      # relative to root
    tree: str       # the folder its files must stay in, relative to root
    classify: str   # the words its label is matched on


def objects(root: Path) -> Iterator[SourceObject]:
    """Units, resources, then tileset objects, each distinct model once, in a stable order."""
    root = Path(root)
    if not (root / GAME / "techs").is_dir():
        raise SourceError(f"{root / GAME}: no techs folder; unpack {PACKAGES[0]} into {root}")
    words = json.loads(CLASSES_FILE.read_text())["words"]
    keyword_map = load_keyword_map(CLASSES_FILE)
    entries, seen = [], set()
    for entry in [*_units(root), *_resources(root), *_tileset_objects(root, words, keyword_map)]:
        fingerprint = _fingerprint(root, entry.model, entry.tree)
        if fingerprint not in seen:
            seen.add(fingerprint)
            entries.append(entry)
    labels = labels_for({e.id: e.classify for e in entries}, CLASSES_FILE)
    for e in entries:
        yield SourceObject(source=NAME, id=e.id, name=e.name, label=labels.get(e.id),
                           texts=e.texts, files=e.files,
                           load=functools.partial(load_model, root, e.model, e.tree))


def _xml(root: Path, path: str) -> ET.Element | None:
    """A parsed XML file, or None when it is unreadable (the caller falls back to names)."""
    try:
        return ET.fromstring(read_bounded(inside(root, GAME, path, path), path))
    except (SourceError, ET.ParseError):
        return None


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


# ---- units and buildings -----------------------------------------------------------------

@dataclasses.dataclass
class _Unit:
    model: str | None = None          # relative to the unit's folder
    building: bool = False
    flying: bool = False
    harvests: list = dataclasses.field(default_factory=list)
    trains: list = dataclasses.field(default_factory=list)
    targets: list = dataclasses.field(default_factory=list)


def _units(root: Path) -> Iterator[_Entry]:
    for tech in _dirs(root / GAME / "techs"):
        for faction in _dirs(tech / "factions"):
            for folder in _dirs(faction / "units"):
                entry = _unit(root, tech.name, faction, folder)
                if entry is not None:
                    yield entry


def _unit(root: Path, tech: str, faction: Path, folder: Path) -> _Entry | None:
    xml = f"{_rel(root, folder)}/{folder.name}.xml"
    element = _xml(root, xml)
    unit = _unit_info(element) if element is not None else _Unit()
    if unit.model is None:
        models = sorted(p.name for p in (folder / "models").glob("*.g3d"))
        if not models:
            return None
        unit.model = f"models/{models[0]}"
    model = posixpath.join(_rel(root, folder), unit.model)
    name, side = sentence_words(folder.name), sentence_words(faction.name)
    return _Entry(id=f"{tech}/{faction.name}/{folder.name}", name=name,
                  texts=_unit_texts(name, side, unit),
                  files=[xml, posixpath.normpath(model)], model=model,
                  tree=_rel(root, faction), classify=f"{'worker' if unit.harvests else ''} {name}")


def _unit_info(element: ET.Element) -> _Unit:
    skills = [(_value(s, "type"), s) for s in element.iterfind("skills/skill")]
    stops = [s for kind, s in skills if kind == "stop"]
    animation = stops[0].find("animation") if stops else None
    fields = {f.get("value", "").strip() for f in element.iterfind("parameters/fields/field")}
    return _Unit(
        model=animation.get("path") if animation is not None else None,
        building=any(kind == "be_built" for kind, _ in skills),
        flying=fields == {"air"},
        harvests=_names(element, "commands/command/harvested-resources/resource"),
        trains=_names(element, "commands/command/produced-unit"),
        targets=sorted({f.get("value", "").strip() for kind, s in skills if kind == "attack"
                        for f in s.iterfind("attack-fields/field")} - {""}))


def _value(element: ET.Element, child: str) -> str:
    found = element.find(child)
    return "" if found is None else found.get("value", "").strip()


def _names(element: ET.Element, path: str) -> list[str]:
    """The distinct name attributes under path, in file order, as words."""
    names = [sentence_words(e.get("name", "")) for e in element.iterfind(path)]
    return list(dict.fromkeys(n for n in names if n))


def _unit_texts(name: str, faction: str, unit: _Unit) -> list[str]:
    # Model file names are left out: units reuse other units' models (an axe thrower's is
    # "worker_standing.g3d"), so they would caption the wrong thing.
    role = "building" if unit.building else "flying unit" if unit.flying else "unit"
    texts = [with_article(name), f"{with_article(name)}, {with_article(role)} of the {faction} faction"]
    if unit.harvests:
        texts.append(f"{with_article(name)} that gathers {join_words(unit.harvests)}")
    if unit.trains:
        texts.append(f"{with_article(name)} that trains {join_words(unit.trains)} units")
    elif unit.targets:
        texts.append(f"{with_article(name)} that attacks {join_words(unit.targets)} targets")
    return texts[:5]


# ---- resources ---------------------------------------------------------------------------

def _resources(root: Path) -> Iterator[_Entry]:
    for tech in _dirs(root / GAME / "techs"):
        for folder in _dirs(tech / "resources"):
            xml = f"{_rel(root, folder)}/{folder.name}.xml"
            element = _xml(root, xml)
            found = None if element is None else element.find("type/model")
            if found is None or not found.get("path"):
                continue  # wood and food come from tileset objects and units, not a model
            model = posixpath.join(_rel(root, folder), found.get("path"))
            name = sentence_words(folder.name)
            yield _Entry(id=f"{tech.name}/resources/{folder.name}", name=f"{name} deposit",
                         texts=[f"a {name} deposit", f"a {name} resource",
                                f"a deposit of {name} that workers gather"],
                         files=[xml, posixpath.normpath(model)], model=model,
                         tree=_rel(root, tech / "resources"), classify=f"{name} deposit")


# ---- tileset objects ---------------------------------------------------------------------

# The map editor's names for the tileset object slots 1..10 (slot 10 is an invisible blocker).
_SLOTS = {1: ("tree", "a tree"), 2: ("dead tree", "a dead tree, cactus or thornbush"),
          3: ("stone", "a stone"), 4: ("bush", "a bush, grass or fern"),
          5: ("reed", "a water plant, reed or papyrus"), 6: ("tree", "a big tree or old palm"),
          7: ("", "a hanged or impaled figure"), 8: ("statue", "a statue"),
          9: ("rock", "a mountain or big rock")}


def _tileset_objects(root: Path, words: dict, keyword_map: dict) -> Iterator[_Entry]:
    for tileset in _dirs(root / GAME / "tilesets"):
        xml = f"{_rel(root, tileset)}/{tileset.name}.xml"
        element = _xml(root, xml)
        if element is None:
            continue
        for slot, group in enumerate(element.iterfind("objects/object"), start=1):
            for found in group.iterfind("model"):
                path = found.get("path", "")
                if slot in _SLOTS and path.lower().endswith(".g3d"):
                    yield _tileset_entry(root, tileset, xml, slot, path, words, keyword_map)


def _tileset_entry(root: Path, tileset: Path, xml: str, slot: int, path: str,
                   words: dict, keyword_map: dict) -> _Entry:
    model = posixpath.join(_rel(root, tileset), path)
    stem = posixpath.basename(path)[:-4]
    name = _english(stem, words) or sentence_words(stem)
    land = _english(tileset.name, words)
    slot_word, slot_text = _SLOTS[slot]
    texts = [with_article(name), f"{with_article(name)} in {with_article(land)} landscape"]
    if classify(name, keyword_map) is None:
        # Slots are loose (hanging gardens share slot 7 with the hanged): only a name
        # that says nothing by itself gets its slot's words.
        texts.insert(1, f"{with_article(name)}, {slot_text}")
    return _Entry(id=f"tilesets/{tileset.name}/{stem}", name=name, texts=texts,
                  files=[xml, posixpath.normpath(model)], model=model,
                  tree=_rel(root, tileset), classify=f"{slot_word} {name}")


_ADJECTIVES = {"big", "small", "dead", "broken", "burned", "old", "tall"}


def _english(stem: str, words: dict) -> str:
    """A file stem as English: letters only, through the classes file's word list (whole
    stems first, then words), adjectives first ('tanne_big2' -> 'big fir')."""
    letters = [w for w in re.findall(r"[a-z]+", stem.lower()) if len(w) > 1]
    whole = words.get("_".join(letters))
    if whole:
        return whole
    split = " ".join(words.get(w, w) for w in letters).split()
    return " ".join([w for w in split if w in _ADJECTIVES] + [w for w in split if w not in _ADJECTIVES])
