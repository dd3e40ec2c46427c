"""0 A.D. (Debian package 0ad-data): every actor of the game's public mod is one object.

The public mod is one zip, public.zip; its members are read into memory by name, never
extracted. An actor (art/actors/**.xml) puts an object together: a mesh (art/meshes/**.pmd,
the game's binary format), a texture (art/textures/skins/) and props, other actors attached
at the mesh's prop points. Of each variant group the first variant the game can pick at
random is taken, at the most detailed quality level, in the rest pose (riders stand on their
horses: no animation is played). Entity templates (simulation/templates/**.xml) name the actor
an entity shows and give it names and classes; actors no template names (props, plants)
are named by their path. Actors with no mesh (decals, particle emitters) and projectiles
are no objects; labels come from zeroad_classes.json.

Frame: PMD data is in the game's left-handed y-up frame, which the converter makes from
COLLADA's right-handed y-up frame by negating z and keeping the triangles' vertex order
(source/collada/PMDConvert.cpp). Negating z again gives the glTF frame with the modeller's
winding and handedness. Checked on 0ad-data: units and animals stand on y = 0, trees are
tallest along y, buildings are centred on x and z, the stored normals agree with the
winding, and a hoplite holds his shield on the left arm; units face +z.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import re
import struct
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from training.recipes.sources import (MAX_FILE_BYTES, SourceError, SourceObject, bounded_image,
                                      check_counts, sentence_words)

NAME = "0ad"
PACKAGES = ("0ad-data",)
ARCHIVE = "usr/share/games/0ad/mods/public/public.zip"
CLASSES_FILE = Path(__file__).with_name("zeroad_classes.json")
MIN_LABELLED = 5           # a label needs this many objects, else the objects go unlabelled

ACTORS = "art/actors/"
TEMPLATES = "simulation/templates/"
MAX_QUALITY = 255          # the game's most detailed actor level (actors without levels have it)
MAX_NESTING = 8            # props of props, variant files within variant files, template parents
MAX_PARTS = 512            # meshes in one object: an actor with all its props
MAX_UV_SETS = 8
MAX_TEXTURE_PIXELS = 4096 * 4096  # decoded before bounded_image downscales it
MAX_BONES = 254            # PMDConvert's limit: 0xFF means "no bone", one slot is the bind shape
GREY = (128, 128, 128, 255)
# What an actor's top folder makes it, for the texts.
KINDS = {"structure": "building", "unit": "unit", "fauna": "animal", "flora": "plant",
         "geology": "rock", "fungi": "mushroom"}
# Folders that say nothing of what is in them.
EMPTY_FOLDERS = {"new", "old", "common", "global", "special", "temp", "eyecandy", "campaign"}
_QUALITY_WORDS = {"low": 100, "medium": 150, "high": 200}


# ---- the archive ----------------------------------------------------------------------------

class _Archive:
    """public.zip, members read by name into memory, each bounded by MAX_FILE_BYTES."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1
        self.names = frozenset(self._open().namelist())

    def _open(self) -> zipfile.ZipFile:
        # A forked worker shares the parent's file offset; it opens its own handle.
        if self._zip is None or self._pid != os.getpid():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise SourceError(f"{self.path}: not a readable zip ({exc}); unpack 0ad-data again") from None
            self._pid = os.getpid()
        return self._zip

    def read(self, member: str) -> bytes:
        zf = self._open()
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise SourceError(f"{member}: not in {ARCHIVE}") from None
        if info.file_size > MAX_FILE_BYTES:
            raise SourceError(f"{member}: {info.file_size} bytes, above the limit of {MAX_FILE_BYTES}")
        try:
            with zf.open(info) as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise SourceError(f"{member}: cannot be read from {ARCHIVE} ({exc})") from None
        if len(data) > MAX_FILE_BYTES:
            raise SourceError(f"{member}: above the limit of {MAX_FILE_BYTES} bytes")
        return data

    def xml(self, member: str) -> ET.Element:
        try:
            return ET.fromstring(self.read(member))
        except ET.ParseError as exc:
            raise SourceError(f"{member}: not well-formed XML ({exc})") from None


# ---- PMD meshes -----------------------------------------------------------------------------

@dataclasses.dataclass
class Pmd:
    """A PMD mesh in the glTF frame, in its rest pose."""

    vertices: np.ndarray                 # (n, 3) float64
    normals: np.ndarray                  # (n, 3) float64
    uv: np.ndarray | None                # (n, 2) float64, the first UV set; None if it has none
    faces: np.ndarray                    # (m, 3) int64
    prop_points: dict[str, np.ndarray]   # name -> 4x4 transform of the point, bones applied


class _Reader:
    """Little-endian reads that stop at the end of the data and name the member."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name, self.at = data, name, 0

    def error(self, reason: str) -> SourceError:
        return SourceError(f"{self.name}: {reason}")

    def take(self, size: int, what: str) -> bytes:
        if size > len(self.data) - self.at:
            raise self.error(f"truncated in the {what} ({size} bytes needed at offset {self.at}, "
                             f"the file has {len(self.data)})")
        self.at += size
        return self.data[self.at - size:self.at]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        return np.frombuffer(self.take(dtype.itemsize * count, what), dtype, count)


def read_pmd(data: bytes, name: str) -> Pmd:
    """A PMD file (versions 3 and 4; 0ad-data holds only 4) -> Pmd, or SourceError naming `name`."""
    reader = _Reader(data, name)
    if reader.take(4, "header") != b"PSMD":
        raise reader.error("not a PMD mesh (no PSMD magic)")
    version, size = reader.u32("header"), reader.u32("header")
    if version not in (3, 4):
        # 1 and 2 store skinned vertices relative to their bones; nothing here is that old.
        raise reader.error(f"PMD version {version} is not read (3 and 4 are)")
    if size != len(data) - 12:
        raise reader.error(f"the header gives {size} bytes of data, the file has {len(data) - 12}")
    n_vertices = reader.u32("vertex count")
    check_counts(name, n_vertices, 0)
    n_uv = reader.u32("UV set count") if version >= 4 else 1
    if n_uv > MAX_UV_SETS:
        raise reader.error(f"{n_uv} UV sets (at most {MAX_UV_SETS})")
    vertex = np.dtype([("position", "<f4", 3), ("normal", "<f4", 3), ("uv", "<f4", (n_uv, 2)),
                       ("bones", "u1", 4), ("weights", "<f4", 4)])
    vertices = reader.array(vertex, n_vertices, "vertices")
    n_faces = reader.u32("face count")
    check_counts(name, n_vertices, n_faces)
    faces = reader.array("<u2", 3 * n_faces, "faces").reshape(-1, 3).astype(np.int64)
    if faces.size and faces.max() >= n_vertices:
        raise reader.error(f"face index {faces.max()} out of range ({n_vertices} vertices)")
    n_bones = reader.u32("bone count")
    if n_bones > MAX_BONES:
        raise reader.error(f"{n_bones} bones (at most {MAX_BONES})")
    bones = reader.array("<f4", 7 * n_bones, "bones").reshape(-1, 7)
    blend = vertices["bones"]
    if ((blend != 0xFF) & (blend > n_bones)).any():  # n_bones itself is the bind-shape slot
        raise reader.error(f"a vertex names bone {blend[blend != 0xFF].max()} of {n_bones}")
    prop_points = _prop_points(reader, bones)
    if reader.at != len(data):
        raise reader.error(f"{len(data) - reader.at} bytes after the prop points")
    mesh = Pmd(vertices=_mirror(vertices["position"]), normals=_mirror(vertices["normal"]),
               uv=vertices["uv"][:, 0].astype(np.float64) if n_uv else None,
               faces=faces, prop_points=prop_points)
    for what, values in (("positions", mesh.vertices), ("normals", mesh.normals), ("UVs", mesh.uv)):
        if values is not None and not np.isfinite(values).all():
            raise reader.error(f"non-finite vertex {what}")
    return mesh


def _prop_points(reader: _Reader, bones: np.ndarray) -> dict[str, np.ndarray]:
    """Prop point name -> 4x4 in the glTF frame; one on a bone sits where the rest pose puts it."""
    count = reader.u32("prop point count")
    if count * 33 > len(reader.data) - reader.at:  # 33 bytes is the smallest prop point
        raise reader.error(f"{count} prop points cannot fit in the rest of the file")
    points = {"root": np.eye(4)}  # every mesh has it; the converter writes it, older files lacked it
    for _ in range(count):
        raw = reader.take(reader.u32("prop point name"), "prop point name")
        transform = _rigid(reader.array("<f4", 7, "prop point"))
        bone = reader.take(1, "prop point")[0]
        if bone != 0xFF:
            if bone >= len(bones):
                raise reader.error(f"prop point {raw!r} is on bone {bone} of {len(bones)}")
            transform = _rigid(bones[bone]) @ transform
        if not np.isfinite(transform).all():
            raise reader.error(f"prop point {raw!r} has a non-finite transform")
        try:
            points[raw.decode("ascii")] = _mirror_transform(transform)
        except UnicodeDecodeError:
            raise reader.error(f"prop point name {raw!r} is not ASCII") from None
    return points


def _rigid(values: np.ndarray) -> np.ndarray:
    """Translation (x, y, z) and quaternion (x, y, z, w) -> 4x4, rotation first (CQuaternion::ToMatrix)."""
    (tx, ty, tz, x, y, z, w) = values.astype(np.float64)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y), tx],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x), ty],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y), tz],
        [0, 0, 0, 1]])


_MIRROR = np.diag([1.0, 1.0, -1.0, 1.0])   # game frame <-> glTF frame: z negated


def _mirror(points: np.ndarray) -> np.ndarray:
    return points.astype(np.float64) @ _MIRROR[:3, :3]


def _mirror_transform(matrix: np.ndarray) -> np.ndarray:
    """A game-frame transform as the same motion in the glTF frame."""
    return _MIRROR @ matrix @ _MIRROR


# ---- actors ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Actor:
    """An actor with a variant chosen in each group: what load() puts together."""

    path: str                                 # its member, art/actors/...
    mesh: str                                 # art/meshes/... member
    texture: str | None                       # its baseTex member; None: grey
    props: tuple[tuple[str, Actor], ...]      # (prop point, actor) pairs, in the game's order

    def files(self) -> list[str]:
        """Its members and its props', each once."""
        files = [self.path, self.mesh] + ([self.texture] if self.texture else [])
        for _, prop in self.props:
            files += [f for f in prop.files() if f not in files]
        return files


@dataclasses.dataclass
class _Variation:
    """What the chosen variants say, later groups overriding earlier ones (CObjectBase)."""

    mesh: str | None = None
    textures: dict[str, str] = dataclasses.field(default_factory=dict)
    props: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (point, actor file)
    frequency: int = 0


def _quality(value: str) -> int:
    value = value.strip().lower()
    if value in _QUALITY_WORDS:
        return _QUALITY_WORDS[value]
    return int(value) if value.isdigit() else 0


def _shown(element: ET.Element) -> bool:
    """Whether an element is there at MAX_QUALITY (minquality / maxquality attributes)."""
    low, high = element.get("minquality"), element.get("maxquality")
    return not ((low is not None and _quality(low) > MAX_QUALITY)
                or (high is not None and _quality(high) <= MAX_QUALITY))


class _Actors:
    """Resolves actors of one archive, each once."""

    def __init__(self, archive: _Archive):
        self.archive = archive
        self._done: dict[str, Actor | None] = {}
        self._variant_files: dict[str, ET.Element] = {}
        self.prop_uses: dict[str, set[str]] = {}   # actor file -> prop points it is attached at

    def get(self, member: str, depth: int = 0) -> Actor | None:
        """The actor at `member` with its first variants; None if it has no mesh (decals, particles)."""
        if member not in self._done:
            if depth > MAX_NESTING:
                raise SourceError(f"{member}: props nest deeper than {MAX_NESTING} (a prop cycle?)")
            self._done[member] = self._resolve(member, depth)
        return self._done[member]

    def _resolve(self, member: str, depth: int) -> Actor | None:
        variation = _Variation()
        for group in self._definition(member).findall("group"):
            variants = [v for v in group if v.tag == "variant" and _shown(v)]
            if _shown(group) and variants:
                _apply(variation, self._chosen(variants, member))
        if variation.mesh is None:
            return None
        mesh = self._member("art/meshes/" + variation.mesh, ".cached.pmd")
        if mesh is None:
            raise SourceError(f"{member}: its mesh art/meshes/{variation.mesh} is not in {ARCHIVE}")
        texture = variation.textures.get("baseTex")
        texture = texture and self._member("art/textures/skins/" + texture, ".cached.dds")
        return Actor(path=member, mesh=mesh, texture=texture,
                     props=tuple(self._props(variation.props, depth)))

    def _props(self, props: list[tuple[str, str]], depth: int) -> Iterator[tuple[str, Actor]]:
        for point, file in props:
            self.prop_uses.setdefault(file, set()).add(point)
            # 'projectile' is the model a unit shoots; 'loaded-' ones show only while it reloads.
            if point == "projectile" or point.startswith("loaded-") or ACTORS + file not in self.archive.names:
                continue  # the game, too, shows no prop whose actor is missing
            prop = self.get(ACTORS + file, depth + 1)
            if prop is not None:
                yield point, prop

    def _member(self, name: str, cached: str) -> str | None:
        """The member for a file an actor names: the file itself or the game's converted cache."""
        for candidate in (name, name + cached):
            if candidate in self.archive.names:
                return candidate
        return None

    def _definition(self, member: str) -> ET.Element:
        """The actor element used at MAX_QUALITY (the last of <qualitylevels>, CActorDef)."""
        root = self.archive.xml(member)
        if root.tag == "qualitylevels":
            levels = [a for a in root if a.tag == "actor" and _quality(a.get("quality", "255")) >= MAX_QUALITY]
            if not levels:
                raise SourceError(f"{member}: no quality level up to {MAX_QUALITY}")
            level = levels[0]
            if level.get("inline") is not None:
                level = root.find("inline")
            elif level.get("file"):
                level = self.archive.xml(ACTORS + level.get("file"))
            if level is None:
                raise SourceError(f"{member}: a quality level is inline but there is no <inline>")
            root = level
        if root.tag not in ("actor", "inline"):
            raise SourceError(f"{member}: root element <{root.tag}>, not <actor>")
        return root

    def _chosen(self, variants: list[ET.Element], member: str) -> _Variation:
        """The first variant the game can pick at random (frequency > 0), else the first."""
        loaded = [self._variant(v, member, 0) for v in variants]
        return next((v for v in loaded if v.frequency > 0), loaded[0])

    def _variant(self, element: ET.Element, member: str, depth: int) -> _Variation:
        """A <variant>: its file= variant first, then its own elements over it (LoadVariant)."""
        variation = _Variation()
        if element.get("file"):
            if depth >= MAX_NESTING:
                raise SourceError(f"{member}: variant files nest deeper than {MAX_NESTING}")
            base = self._variant(self._variant_file(element.get("file")), member, depth + 1)
            _apply(variation, base)
            variation.frequency = base.frequency
        if element.get("frequency", "").strip().isdigit():
            variation.frequency = int(element.get("frequency"))
        for child in element:
            if child.tag == "mesh" and child.text and child.text.strip():
                variation.mesh = child.text.strip()
            elif child.tag == "textures":
                variation.textures.update((t.get("name", ""), t.get("file", "")) for t in child
                                          if t.tag == "texture" and t.get("file"))
            elif child.tag == "props":
                variation.props += [(p.get("attachpoint", ""), p.get("actor", "")) for p in child
                                    if p.tag == "prop"]
        return variation

    def _variant_file(self, file: str) -> ET.Element:
        if file not in self._variant_files:
            self._variant_files[file] = self.archive.xml("art/variants/" + file)
        return self._variant_files[file]


def _apply(variation: _Variation, variant: _Variation) -> None:
    """Puts a variant over a variation: its props replace those at the same points."""
    variation.mesh = variant.mesh or variation.mesh
    variation.textures.update(variant.textures)
    points = {point for point, _ in variant.props}
    variation.props = [p for p in variation.props if p[0] not in points]
    variation.props += [(point, file) for point, file in variant.props if file]


# ---- loading --------------------------------------------------------------------------------

def _load(archive: _Archive, actor: Actor) -> list[trimesh.Trimesh]:
    """The actor's mesh and its props' meshes, each where its prop point puts it."""
    meshes: list[trimesh.Trimesh] = []
    _place(archive, actor, np.eye(4), meshes, {})
    return meshes


def _place(archive: _Archive, actor: Actor, transform: np.ndarray, meshes: list, textures: dict) -> None:
    if len(meshes) >= MAX_PARTS:
        raise SourceError(f"{actor.path}: more than {MAX_PARTS} meshes with its props")
    pmd = read_pmd(archive.read(actor.mesh), actor.mesh)
    meshes.append(_trimesh(pmd, _texture(archive, actor.texture, textures), transform))
    for point, prop in actor.props:
        # The game leaves out a prop whose point the mesh lacks; it is kept here, at the origin.
        _place(archive, prop, transform @ pmd.prop_points.get(point, np.eye(4)), meshes, textures)


def _trimesh(pmd: Pmd, image: Image.Image | None, transform: np.ndarray) -> trimesh.Trimesh:
    rotation = transform[:3, :3]
    if image is not None and pmd.uv is not None:
        # PMD UVs are COLLADA's (v up from the image's bottom), as trimesh's are.
        visual = trimesh.visual.TextureVisuals(
            uv=pmd.uv, material=trimesh.visual.material.PBRMaterial(baseColorTexture=image))
    else:
        visual = trimesh.visual.TextureVisuals(
            material=trimesh.visual.material.PBRMaterial(baseColorFactor=GREY))
    normals = pmd.normals @ rotation.T
    return trimesh.Trimesh(vertices=pmd.vertices @ rotation.T + transform[:3, 3], faces=pmd.faces,
                           vertex_normals=normals, visual=visual, process=False)


def _texture(archive: _Archive, member: str | None, textures: dict) -> Image.Image | None:
    """A skin as RGB (0 A.D.'s alpha masks player colour, not opacity); None if not usable."""
    if member is None:
        return None
    if member not in textures:
        try:
            with Image.open(io.BytesIO(archive.read(member))) as image:
                too_big = image.width * image.height > MAX_TEXTURE_PIXELS
                textures[member] = None if too_big else bounded_image(image.convert("RGB"))
        except (OSError, ValueError, EOFError, NotImplementedError, SourceError, Image.DecompressionBombError):
            textures[member] = None  # a texture that cannot be read leaves its mesh grey
    return textures[member]


# ---- templates ------------------------------------------------------------------------------

IDENTITY = ("GenericName", "SpecificName", "History", "Classes", "VisibleClasses")


@dataclasses.dataclass
class Template:
    """An entity template's Identity and actor, its parents merged in."""

    name: str                                                # e.g. "structures/athen/temple"
    fields: dict[str, str | tuple[str, ...]]                 # Identity tag -> text, or tokens
    actor: str | None                                        # VisualActor/Actor, under art/actors/


def _own_fields(root: ET.Element) -> dict:
    """A template's own Identity fields and VisualActor/Actor, as it writes them."""
    fields: dict = {}
    for element in root.findall("Identity/*"):
        if element.tag in IDENTITY:
            if element.get("datatype") == "tokens":
                fields[element.tag] = ("replace" in element.attrib, tuple((element.text or "").split()))
            else:
                fields[element.tag] = (element.text or "").strip()
    actor = root.find("VisualActor/Actor")
    if actor is not None and actor.text and actor.text.strip():
        fields["Actor"] = actor.text.strip()
    return fields


def _merge(base: dict, layer: dict) -> dict:
    """A layer over its parent: text replaces, tokens add (and "-token" removes) unless replace."""
    merged = dict(base)
    for tag, value in layer.items():
        if isinstance(value, tuple):
            replace, tokens = value
            kept = [] if replace else list(merged.get(tag, ()))
            for token in tokens:
                if token.startswith("-"):
                    kept = [t for t in kept if t != token[1:]]
                elif token not in kept:
                    kept.append(token)
            merged[tag] = tuple(kept)
        else:
            merged[tag] = value
    return merged


class _Templates:
    """The templates of one archive with their parents resolved (parent="mixin|...|base")."""

    def __init__(self, archive: _Archive):
        self.archive = archive
        self._resolved: dict[str, dict] = {}

    def all(self) -> Iterator[Template]:
        """Every template that can be read; one that cannot names no actor."""
        for member in sorted(n for n in self.archive.names if n.startswith(TEMPLATES) and n.endswith(".xml")):
            name = member[len(TEMPLATES):-len(".xml")]
            try:
                fields = self.resolved(name)
            except SourceError:
                continue
            identity = {k: v for k, v in fields.items() if k != "Actor"}
            yield Template(name=name, fields=identity, actor=fields.get("Actor"))

    def resolved(self, name: str, depth: int = 0) -> dict:
        if name not in self._resolved:
            if depth > MAX_NESTING:
                raise SourceError(f"{TEMPLATES}{name}.xml: parents nest deeper than {MAX_NESTING}")
            root = self.archive.xml(self._member(name))
            # parent="a|b|base": the base with its parents, then each mixin's own file over it
            # (b, then a), then this template's.
            parents = [p for p in root.get("parent", "").split("|") if p]
            fields = self.resolved(parents[-1], depth + 1) if parents else {}
            for mixin in reversed(parents[:-1]):
                fields = _merge(fields, _own_fields(self.archive.xml(self._member(mixin))))
            self._resolved[name] = _merge(fields, _own_fields(root))
        return self._resolved[name]

    def _member(self, name: str) -> str:
        for candidate in (f"{TEMPLATES}{name}.xml", f"{TEMPLATES}mixins/{name}.xml"):
            if candidate in self.archive.names:
                return candidate
        raise SourceError(f"{TEMPLATES}{name}.xml: no such template")


def _primary(templates: list[Template]) -> Template:
    """The template that best speaks for an actor: a playable entity over an abstract or scenario one."""
    def rank(template: Template) -> tuple:
        base = template.name.rsplit("/", 1)[-1]
        return (base.startswith("template_"),
                template.name.startswith(("skirmish/", "campaigns/", "special/", "trigger/")),
                template.name)
    return min(templates, key=rank)


# ---- names, texts and labels ----------------------------------------------------------------

def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    """Words of a file or folder name, without digits and one-letter variant marks ('oak_tree_b2' -> oak tree)."""
    words = (w.strip("0123456789") for w in sentence_words(text).split())
    return [w for w in words if len(w) > 1]


@dataclasses.dataclass
class _ActorPath:
    """What an actor's path says: 'structures/athenians/temple.xml' -> an athenian temple, a building."""

    words: str               # the whole path's words ('structures athenians temple')
    stem: list[str]          # the file name's words
    folders: list[str]       # each folder's words, singular, outermost first, empty ones left out
    civ: str | None          # the civilisation folder, singular ('athenian')

    @classmethod
    def of(cls, rel: str) -> _ActorPath:
        parts = rel.removesuffix(".xml").split("/")
        folders = [" ".join(_singular(w) for w in _words(p)) for p in parts[:-1]]
        folders = [f for f in folders if f and f not in EMPTY_FOLDERS]
        # A civilisation's folder: structures/<civ>/, units/<civ>/, props/structures/<civ>/.
        civ = None
        if folders[:1] in (["structure"], ["unit"]) and len(folders) > 1:
            civ = folders[1]
        elif folders[:2] == ["prop", "structure"] and len(folders) > 2:
            civ = folders[2]
        return cls(words=sentence_words("/".join(parts)), stem=_words(parts[-1]), folders=folders, civ=civ)

    def nouns(self) -> list[str]:
        """Folders that name what is in them ('trees', 'helmets'), innermost first."""
        kinds = set(KINDS) | {"prop"}
        return [f for f in reversed(self.folders) if f != self.civ and f not in kinds]

    def phrase(self) -> str:
        words = ([self.civ] if self.civ else []) + self.stem
        nouns = self.nouns()
        if nouns and nouns[0] not in " ".join(self.stem):
            words.append(nouns[0])
        return " ".join(words) or " ".join(self.folders)

    def kind(self) -> str | None:
        """'building', 'animal', ... or 'part of a building' for a prop."""
        top = self.folders[:2]
        if top and top[0] == "prop":
            return f"part of {_a(KINDS[top[1]])}" if len(top) > 1 and top[1] in KINDS else "prop"
        return KINDS.get(top[0]) if top else None


def _a(noun: str) -> str:
    vowel = noun[:1].lower() in "aeiou" and not noun.lower().startswith(("uni", "use", "eu", "one"))
    return ("an " if vowel else "a ") + noun


def _first_sentence(text: str, limit: int = 200) -> str:
    sentence = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + "..."


def _texts(path: _ActorPath, template: Template | None) -> list[str]:
    """2-6 short sentences from the template's Identity and the actor's path."""
    texts = []
    if template is not None:
        generic = str(template.fields.get("GenericName", ""))
        specific = str(template.fields.get("SpecificName", ""))
        history = str(template.fields.get("History", ""))
        visible = [sentence_words(c) for c in template.fields.get("VisibleClasses", ())]
        if generic:
            texts.append(_a(generic.lower()))
        if specific:
            texts.append(f"{specific}, {_a(generic.lower())}" if generic else specific)
        if history:
            texts.append(f"{specific or generic}: {_first_sentence(history)}")
        if visible:
            texts.append(f"{generic or path.phrase()}: {', '.join(visible)}")
    phrase, kind = path.phrase(), path.kind()
    texts.append(_a(phrase))
    if kind and kind not in phrase:
        texts.append(f"{phrase.capitalize()}, {_a(kind)}")
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    if len(unique) < 2:
        unique.append(path.words)
    return unique[:6]


def load_classes(path: Path = CLASSES_FILE) -> dict:
    """The keyword map: {"classes": {class: [phrase words]}, "exclude": set, "props_may_be": set}."""
    data = json.loads(path.read_text())
    return {"classes": {c: [tuple(k.split()) for k in keywords] for c, keywords in data["classes"].items()},
            "exclude": set(data["exclude"]), "props_may_be": set(data["props_may_be"])}


def _first_class(words: list[str], classes: dict) -> str | None:
    """The class of the longest keyword in `words`; of equally long ones, the class listed first."""
    words = [_singular(w) for w in words]
    grams = {tuple(words[i:i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)}
    found = [(-len(k), order, c) for order, (c, keywords) in enumerate(classes.items())
             for k in keywords if k in grams]
    return min(found)[2] if found else None


def classify(path: _ActorPath, template: Template | None, keyword_map: dict) -> str | None:
    """The class the actor's metadata names, source by source (see zeroad_classes.json)."""
    if any(w in keyword_map["exclude"] for w in path.stem):
        return None
    classes = keyword_map["classes"]
    if path.folders[:1] == ["prop"]:
        classes = {c: k for c, k in classes.items() if c in keyword_map["props_may_be"]}
    sources = [path.stem] + [f.split() for f in path.nouns()]
    if template is not None:
        sources.append(_words(str(template.fields.get("GenericName", ""))))
        tokens = template.fields.get("VisibleClasses", ()) + template.fields.get("Classes", ())
        sources.append([w for t in tokens for w in _words(t)])
    sources.append(_words(path.kind() or ""))
    return next((c for c in (_first_class(s, classes) for s in sources) if c), None)


# ---- the source -----------------------------------------------------------------------------

def objects(root: Path) -> Iterator[SourceObject]:
    """Every actor with a mesh, in path order, named by the templates that show it."""
    archive = _Archive(Path(root) / ARCHIVE)
    actors = _Actors(archive)
    by_actor: dict[str, list[Template]] = {}
    for template in _Templates(archive).all():
        if template.actor:
            by_actor.setdefault(ACTORS + template.actor, []).append(template)
    found = []
    for member in sorted(n for n in archive.names if n.startswith(ACTORS) and n.endswith(".xml")):
        try:
            actor: Actor | SourceError | None = actors.get(member)
        except SourceError as error:
            actor = error  # listed, so the corpus counts it; its load() raises
        if actor is not None:
            found.append((member, actor))
    keyword_map = load_classes()
    entries = []
    for member, actor in found:
        rel = member[len(ACTORS):]
        if _projectile(rel, actors.prop_uses.get(rel, set())):
            continue
        templates = by_actor.get(member, [])
        template = _primary(templates) if templates else None
        path = _ActorPath.of(rel)
        entries.append((member, actor, template, path, classify(path, template, keyword_map)))
    counts = collections.Counter(label for *_, label in entries)
    for member, actor, template, path, label in entries:
        yield _object(archive, member, actor, template, path,
                      label if counts[label] >= MIN_LABELLED else None)


def _projectile(rel: str, points: set[str]) -> bool:
    """An arrow, bolt or stone in flight: only ever attached as a unit's 'projectile'."""
    return "projectile" in rel or (bool(points) and points <= {"projectile"})


def _object(archive: _Archive, member: str, actor: Actor | SourceError, template: Template | None,
            path: _ActorPath, label: str | None) -> SourceObject:
    files = actor.files() if isinstance(actor, Actor) else [member]
    if template is not None:
        files.append(f"{TEMPLATES}{template.name}.xml")
    return SourceObject(
        source=NAME, id=member[len(ACTORS):].removesuffix(".xml"), name=path.phrase().capitalize(),
        label=label, texts=_texts(path, template), files=[f"{ARCHIVE}:{f}" for f in files],
        load=_loader(archive, actor))


def _loader(archive: _Archive, actor: Actor | SourceError):
    def load() -> list[trimesh.Trimesh]:
        if isinstance(actor, SourceError):
            raise SourceError(str(actor))
        return _load(archive, actor)
    return load
