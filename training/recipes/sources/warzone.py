"""Warzone 2100 (warzone2100-data): structures, features and droid components, from PIE.

The models are members of two zip archives under usr/share/games/warzone2100/, read in
memory by name and never extracted: mp.wz (the skirmish rules) over base.wz, as the game
loads them. Objects are the PIE files under components/ (bodies, propulsion, weapons and
turret mounts), structs/ and features/; effects/ and misc/ (explosions, map markers) are
no objects, nor are animation variants (the model an EVENT line swaps in, or a model
moved by ANIMOBJECT keyframes), nor the znull placeholders. Names come from stats/*.json
(structure, features, body, propulsion, weapons, sensor, ecm, repair, construction),
which map ids to a "name" and to model files; *starred* names are the developers' own.

PIE (doc/PIE.md and lib/ivis_opengl/imdload.cpp of Warzone 2100, read for the format;
this parser is written from them): a text file of directives. "PIE 2|3|4", "TYPE hex",
"TEXTURE tileset page.png [w h]" (tileset 0 is taken), "EVENT n file", "LEVELS n", then
per "LEVEL i": "POINTS n" + n lines x y z, optional "NORMALS n", "POLYGONS n" + n lines
"flags(hex) count i0 i1 ... [4 animation numbers when flags & 0x4000] u0 v0 u1 v1 ...",
optional "CONNECTORS n", "ANIMOBJECT time cycles n", "SHADOWPOINTS"/"SHADOWPOLYGONS".
Polygons of more than three points are fans. PIE 2 uv are texels of a 256 page (/256);
PIE 3/4 uv are 0..1; both count v down the image. Every level of a model is kept: levels
are the separately animated parts of one model (a factory's doors, a derrick's pump),
not levels of detail, and level 1 alone is often a bare base plate.

Frame: PIE is y-up (structures stand on y = 0, the HQ reaches y = 281) but mirrored: it
is a left-handed frame. Checked on the map-number markers (misc/micnum/micnum2.pie): the
digit 2 of page-12 lies on the up-facing quad with its top toward +z and its right
toward +x, which reads correctly only in a left-handed frame. So z is negated into the
glTF frame (turret barrels, at -z in PIE, then point +z, glTF's front), and since the
triangles wind counter-clockwise about their outward normals in the file (signed volume
> 0 on closed structures; the six files with NORMALS agree), the mirror reverses the
winding to keep them outward.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import posixpath
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import trimesh

from training.recipes.sources import (MAX_FILE_BYTES, SourceError, SourceObject, check_counts,
                                      sentence_words)
from training.recipes.sources.rts_meshes import (bleed_cutouts, build_mesh, checked_faces,
                                                 decode_image, join_words, labels_for,
                                                 with_article)

NAME = "warzone2100"
PACKAGES = ("warzone2100-data",)
DATA = "usr/share/games/warzone2100"
ARCHIVES = ("mp.wz", "base.wz")        # the first that has a member wins
MODEL_FOLDERS = ("components/", "structs/", "features/")
STATS = ("structure", "features", "body", "propulsion", "weapons", "sensor", "ecm", "repair",
         "construction")
CLASSES_FILE = Path(__file__).with_name("warzone_classes.json")

_TEXTURED, _TEXTURE_ANIMATION = 0x200, 0x4000
_MAX_POLYGON_POINTS = 64
_PAGE_NAME = re.compile(r"[A-Za-z0-9._-]+\.png")  # PIE.md: what a texture page may be called
_COUNTED = {"POINTS", "NORMALS", "POLYGONS", "CONNECTORS", "SHADOWPOINTS", "SHADOWPOLYGONS"}
# Model name suffixes of the NEXUS and Collective faction restylings of a base model.
_FACTIONS = {"_nex": "NEXUS", "_col": "Collective"}
# One side of a propulsion model: l or r after the size letter ('prmlwhl1' of 'prmwhl1').
_SIDE = re.compile(r"(pr[lmhs])([lr])(\w+)")


# ---- the archives ------------------------------------------------------------------------

class Archives:
    """The .wz archives of a root by member name (case-insensitive), mp.wz over base.wz.
    The zips stay open: reading a central directory costs more than most members."""

    def __init__(self, root: Path):
        paths = [Path(root) / DATA / name for name in ARCHIVES]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise SourceError(f"{missing[0]}: not found; unpack {PACKAGES[0]} into {root}")
        self.zips = {path: self._open(path) for path in paths}
        self.members: dict[str, tuple[Path, zipfile.ZipInfo]] = {}
        for path, archive in self.zips.items():
            for info in archive.infolist():
                if not info.is_dir():
                    self.members.setdefault(info.filename.lower(), (path, info))

    @staticmethod
    def _open(path: Path) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceError(f"{path}: not a readable zip archive ({exc})") from None

    def shown(self, name: str) -> str:
        """'base.wz:structs/blhq.pie', for messages and provenance."""
        path, info = self.members[name.lower()]
        return f"{path.name}:{info.filename}"

    def read(self, name: str) -> bytes:
        """A member's bytes, refused above MAX_FILE_BYTES (declared or actual)."""
        if name.lower() not in self.members:
            raise SourceError(f"{name}: not in {' or '.join(p.name for p in self.zips)}")
        path, info = self.members[name.lower()]
        shown = f"{path.name}:{info.filename}"
        if info.file_size > MAX_FILE_BYTES:
            raise SourceError(f"{shown}: {info.file_size} bytes is above the limit")
        try:
            with self.zips[path].open(info) as member:
                data = member.read(MAX_FILE_BYTES + 1)
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise SourceError(f"{shown}: cannot be read from the archive ({exc})") from None
        if len(data) > MAX_FILE_BYTES:
            raise SourceError(f"{shown}: inflates above the limit of {MAX_FILE_BYTES} bytes")
        return data


def _archives(root: str) -> Archives:
    # Per process: a forked worker must not share the parent's open zip file offsets.
    return _archives_of(root, os.getpid())


@functools.lru_cache(maxsize=4)
def _archives_of(root: str, _pid: int) -> Archives:
    return Archives(Path(root))


@functools.lru_cache(maxsize=16)
def _page(root: str, page: str):
    """A decoded texture page, its cut-outs bled; pages are shared by many models."""
    archives = _archives(root)
    member = f"texpages/{page}"
    return bleed_cutouts(decode_image(archives.read(member), archives.shown(member)))


# ---- the PIE parser ----------------------------------------------------------------------

@dataclasses.dataclass
class PieLevel:
    points: np.ndarray         # (N, 3) float64, as in the file
    corners: np.ndarray        # (F, 3) int64 point indices, checked against N
    uv: np.ndarray             # (F, 3, 2) float64, OpenGL (v = 0 at the image's bottom)
    texture: str | None        # the level's texture page, if it overrides the model's


@dataclasses.dataclass
class Pie:
    version: int
    texture: str | None        # the texture page of tileset 0
    levels: list[PieLevel]
    events: list[str]          # models swapped in during an event (animation variants)
    animated: bool             # its levels move by ANIMOBJECT keyframes


class _Lines:
    """The meaningful lines of a PIE file (comments and blank lines dropped), front to back."""

    def __init__(self, text: str, shown: str):
        self.shown = shown
        stripped = (line.split("#", 1)[0].split() for line in text.splitlines())
        self.lines = [words for words in stripped if words]
        self.at = 0

    def more(self) -> bool:
        return self.at < len(self.lines)

    def next(self) -> list[str]:
        self.at += 1
        return self.lines[self.at - 1]

    def block(self, count: int, what: str) -> list[list[str]]:
        left = len(self.lines) - self.at
        if count < 0 or count > left:
            raise SourceError(f"{self.shown}: {what} {count} but {left} lines follow (truncated?)")
        self.at += count
        return self.lines[self.at - count:self.at]

    def fail(self, reason: str) -> SourceError:
        return SourceError(f"{self.shown}: line {self.at}: {reason}")


def read_pie(text: str, shown: str) -> Pie:
    """A PIE 2/3/4 model; SourceError naming the file on anything malformed."""
    lines = _Lines(text, shown)
    head = lines.next() if lines.more() else []
    if len(head) < 2 or head[0] != "PIE" or head[1] not in ("2", "3", "4"):
        raise SourceError(f"{shown}: not a PIE 2, 3 or 4 model (starts {' '.join(head[:2])!r})")
    pie = Pie(version=int(head[1]), texture=None, levels=[], events=[], animated=False)
    level = None
    while lines.more():
        words = lines.next()
        directive, count = words[0], _count(lines, words)
        if directive == "TEXTURE":
            texture = _texture_name(lines, words)
            if texture is not None and level is None:
                pie.texture = pie.texture or texture
            elif texture is not None:
                level["texture"] = level["texture"] or texture
        elif directive == "EVENT" and len(words) >= 3:
            pie.events.append(words[2].lower())
        elif directive == "LEVEL":
            level = {"texture": None, "points": None}
            pie.levels.append(level)
        elif directive == "POINTS" and level is not None:
            level["points"] = _points(lines, count)
        elif directive == "POLYGONS" and level is not None:
            if level["points"] is None:
                raise lines.fail("POLYGONS before POINTS")
            level["polygons"] = _polygons(lines, count, len(level["points"]), pie.version)
        elif directive == "ANIMOBJECT":
            pie.animated = True
            lines.block(_int(lines, words, 3), "ANIMOBJECT frames")
        elif directive in _COUNTED:
            lines.block(count, directive)
    pie.levels = [_level(lines, i, level) for i, level in enumerate(pie.levels)]
    return pie


def _count(lines: _Lines, words: list[str]) -> int:
    """The number after a counted directive (0 for the others)."""
    return _int(lines, words, 1) if words[0] in _COUNTED | {"LEVELS", "LEVEL"} else 0


def _int(lines: _Lines, words: list[str], index: int) -> int:
    try:
        return int(words[index])
    except (IndexError, ValueError):
        raise lines.fail(f"{words[0]} needs a whole number") from None


def _texture_name(lines: _Lines, words: list[str]) -> str | None:
    """The page of a TEXTURE line for tileset 0 (others are tileset overrides)."""
    if len(words) < 3:
        raise lines.fail("TEXTURE needs a tileset and a page")
    if words[1] != "0":
        return None
    if not _PAGE_NAME.fullmatch(words[2]):
        raise lines.fail(f"texture page {words[2]!r} is not a plain .png name in texpages/")
    return words[2]


def _floats(lines: _Lines, words: list[str], what: str) -> list[float]:
    try:
        return [float(w) for w in words]
    except ValueError:
        raise lines.fail(f"{what} has a non-number: {' '.join(words)[:80]!r}") from None


def _points(lines: _Lines, count: int) -> np.ndarray:
    check_counts(lines.shown, count, 0)
    rows = [_floats(lines, words[:3], "a point") for words in lines.block(count, "POINTS")]
    if any(len(row) != 3 for row in rows):
        raise lines.fail("a point has fewer than 3 coordinates")
    points = np.array(rows, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise lines.fail("a point is not finite")
    return points


def _polygons(lines: _Lines, count: int, n_points: int, version: int):
    """(corners (F, 3), uv (F, 3, 2)) of a POLYGONS block, fans split into triangles."""
    check_counts(lines.shown, n_points, count)
    scale = 256.0 if version == 2 else 1.0
    corners, uv = [], []
    for words in lines.block(count, "POLYGONS"):
        try:
            flags, size = int(words[0], 16), int(words[1])
        except (IndexError, ValueError):
            raise lines.fail(f"a polygon needs hex flags and a point count: {words[:2]}") from None
        if not 3 <= size <= _MAX_POLYGON_POINTS:
            raise lines.fail(f"a polygon of {size} points")
        if not flags & _TEXTURED:
            raise lines.fail("a polygon without texture coordinates (flag 200)")
        skip = 4 if flags & _TEXTURE_ANIMATION else 0  # frames, rate, width, height: frame 0 kept
        if len(words) < 2 + 3 * size + skip:
            raise lines.fail(f"a polygon of {size} points has {len(words) - 2} numbers")
        try:
            indices = [int(i) for i in words[2:2 + size]]
        except ValueError:
            raise lines.fail(f"a polygon's point indices are not whole numbers: {words[2:2 + size]}") from None
        numbers = _floats(lines, words[2 + size + skip:2 + 3 * size + skip], "a polygon's uv")
        coords = np.array(numbers).reshape(size, 2) / scale
        for k in range(1, size - 1):
            corners.append([indices[0], indices[k], indices[k + 1]])
            uv.append(coords[[0, k, k + 1]])
    faces = checked_faces(np.array(corners, dtype=np.int64), n_points, lines.shown)
    uv = np.array(uv, dtype=np.float64).reshape(-1, 3, 2)
    uv[..., 1] = 1.0 - uv[..., 1]
    return faces, uv


def _level(lines: _Lines, index: int, level: dict) -> PieLevel:
    if level["points"] is None or "polygons" not in level:
        raise SourceError(f"{lines.shown}: level {index + 1} has no POINTS or POLYGONS")
    corners, uv = level["polygons"]
    return PieLevel(points=level["points"], corners=corners, uv=uv, texture=level["texture"])


# ---- one model ---------------------------------------------------------------------------

def to_gltf(level: PieLevel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, faces and per-vertex uv of a level in the glTF frame: z mirrored, winding
    reversed to stay outward, one vertex per corner (PIE gives uv per polygon corner)."""
    corners, uv = level.corners[:, ::-1], level.uv[:, ::-1]
    vertices = level.points[corners].reshape(-1, 3) * np.array([1.0, 1.0, -1.0])
    faces = np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)
    return vertices, faces, uv.reshape(-1, 2)


def load_model(root: str, member: str) -> list[trimesh.Trimesh]:
    """The levels of one PIE member as textured meshes in the glTF frame."""
    archives = _archives(root)
    shown = archives.shown(member)
    pie = read_pie(archives.read(member).decode("latin-1"), shown)
    meshes = []
    for index, level in enumerate(pie.levels):
        if not len(level.corners):
            continue
        page = level.texture or pie.texture
        vertices, faces, uv = to_gltf(level)
        # Page alpha is transparency (team colour has its own _tcmask pages): tree leaves.
        meshes.append(build_mesh(vertices, faces, uv=uv, image=_page(root, page) if page else None,
                                 alpha_mask=True, name=f"level {index + 1}"))
    if not meshes:
        raise SourceError(f"{shown}: no triangles")
    return meshes


# ---- what the stats say a model is ---------------------------------------------------------

@dataclasses.dataclass
class _Meaning:
    kind: str                 # structure, structure base, feature, body, propulsion, weapon...
    name: str                 # readable: 'command center', 'heavy machinegun hardpoint'
    detail: str = ""          # the record's type: 'factory', 'tree', 'machine gun', 'wheeled'
    extra: list = dataclasses.field(default_factory=list)  # weapons, body size, effect
    starred: bool = False     # a developer's name (*Ruin1*), taken only without a better one
    style: str = ""           # a variant's phrase ("in the NEXUS style")


def stats_meanings(archives: Archives) -> dict[str, _Meaning]:
    """pie file name (lower case) -> what the stats files say it is; clean names win."""
    stats = {name: _stats_file(archives, name) for name in STATS}
    found: dict[str, _Meaning] = {}
    for model, meaning in _all_meanings(stats):
        key = model.lower()
        if key not in found or (found[key].starred and not meaning.starred):
            found[key] = meaning
    return found


def _stats_file(archives: Archives, name: str) -> dict:
    member = f"stats/{name}.json"
    if member not in archives.members:
        return {}
    try:
        data = json.loads(archives.read(member))
    except ValueError as exc:
        raise SourceError(f"{archives.shown(member)}: not JSON ({exc})") from None
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _records(stats: dict, name: str) -> Iterator[tuple[dict, str, bool]]:
    """(record, readable name, starred) of a stats file in id order, placeholders left out."""
    for _id, record in sorted(stats[name].items()):
        raw = str(record.get("name", ""))
        if raw.strip("*").upper().startswith("Z NULL"):
            continue
        yield record, _readable(raw), raw.startswith("*")


def _readable(raw: str) -> str:
    """'*LogCabin1*' -> 'log cabin', 'Tank Killer Emplacement' -> 'tank killer emplacement'
    (numbers of a series dropped: 'Tree3' -> 'tree')."""
    words = re.sub(r"(?<=[a-z])\d+\b|\b\d+\b", "", sentence_words(raw.replace("*", " "))).split()
    return " ".join(words) or sentence_words(raw)


def _words(value) -> str:
    return sentence_words(str(value)) if value else ""


def _all_meanings(stats: dict) -> Iterator[tuple[str, _Meaning]]:
    weapons = {k: _readable(str(v.get("name", k))) for k, v in stats["weapons"].items()}
    for record, name, starred in _records(stats, "structure"):
        kind = _words(record.get("type"))
        armed = [weapons.get(w, "") for w in record.get("weapons", []) if isinstance(w, str)]
        for model in _models(record.get("structureModel")):
            yield model, _Meaning("structure", name, kind, [w for w in armed if w], starred)
        for model in _models(record.get("baseModel")):
            yield model, _Meaning("structure base", name, kind, [], starred)
    for record, name, starred in _records(stats, "features"):
        for model in _models(record.get("model")):
            yield model, _Meaning("feature", name, _words(record.get("type")), [], starred)
    yield from _component_meanings(stats)


def _component_meanings(stats: dict) -> Iterator[tuple[str, _Meaning]]:
    propulsion = {k: (_readable(str(v.get("name", k))), _words(v.get("type")))
                  for k, v in stats["propulsion"].items()}
    for record, name, starred in _records(stats, "body"):
        size = _words(record.get("size"))
        kind = "cyborg" if record.get("droidType") == "CYBORG" else "vehicle"
        for model in _models(record.get("model")):
            yield model, _Meaning("body", name, size, [kind], starred)
        extras = record.get("propulsionExtraModels")
        for prop_id, sides in sorted(extras.items()) if isinstance(extras, dict) else []:
            prop_name, prop_type = propulsion.get(prop_id, (_readable(prop_id), ""))
            for model in _models(sides.get("left") if isinstance(sides, dict) else None):
                yield model, _Meaning("propulsion", prop_name, prop_type, [size], False)
    for record, name, starred in _records(stats, "propulsion"):
        for model in _models(record.get("model")):
            yield model, _Meaning("propulsion", name, _words(record.get("type")), [], starred)
    for record, name, starred in _records(stats, "weapons"):
        sub = _words(record.get("weaponSubClass"))
        effect = [_words(record.get("weaponEffect"))] if record.get("weaponEffect") else []
        for model in _models(record.get("model")):
            yield model, _Meaning("weapon", name, sub, effect, starred)
        for model in _models(record.get("mountModel")):
            yield model, _Meaning("turret mount", name, sub, [], starred)
    for kind in ("sensor", "ecm", "repair", "construction"):
        for record, name, starred in _records(stats, kind):
            for key in ("sensorModel", "model"):
                for model in _models(record.get(key)):
                    yield model, _Meaning("turret", name, kind, [], starred)
            for model in _models(record.get("mountModel")):
                yield model, _Meaning("turret mount", name, kind, [], starred)


def _models(value) -> list[str]:
    """The .pie file names a stats field holds (one name or a list)."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and v.lower().endswith(".pie")]


# ---- the catalogue -----------------------------------------------------------------------

def objects(root: Path) -> Iterator[SourceObject]:
    """One object per static PIE model under components/, structs/ and features/."""
    root_key = str(Path(root))
    archives = _archives(root_key)
    meanings = stats_meanings(archives)
    models = sorted(m for m in archives.members
                    if m.startswith(MODEL_FOLDERS) and m.endswith(".pie")
                    and not posixpath.basename(m).startswith("znull"))
    variants = _animation_variants(archives, models)
    entries = []
    for member in models:
        if posixpath.basename(member) in variants:
            continue
        meaning = _meaning(member, meanings)
        entries.append((member, meaning))
    labels = labels_for({m: _classify_text(meaning) for m, meaning in entries}, CLASSES_FILE)
    for member, meaning in entries:
        yield SourceObject(source=NAME, id=member[:-4], name=_title(meaning),
                           label=labels.get(member), texts=_texts(meaning),
                           files=[archives.shown(member)],
                           load=functools.partial(load_model, root_key, member))


def _animation_variants(archives: Archives, models: list[str]) -> set[str]:
    """File names of models that only animate another (EVENT targets, ANIMOBJECT levels).
    A model that cannot be read is kept: its load names the problem."""
    variants = set()
    for member in models:
        try:
            pie = read_pie(archives.read(member).decode("latin-1"), archives.shown(member))
        except SourceError:
            continue
        variants.update(pie.events)
        if pie.animated:
            variants.add(posixpath.basename(member))
    return variants


_FOLDER_KINDS = {"components/bodies/": "body", "components/prop/": "propulsion",
                 "components/weapons/": "weapon", "structs/": "structure", "features/": "feature"}


def _meaning(member: str, meanings: dict[str, _Meaning]) -> _Meaning:
    """The stats' meaning of a model; a faction restyling (_nex, _col) takes its base
    model's with the faction added; otherwise the folder and file name say what they can."""
    stem = posixpath.basename(member)[:-4]
    if f"{stem}.pie" in meanings:
        return meanings[f"{stem}.pie"]
    for suffix, faction in _FACTIONS.items():
        base = meanings.get(f"{stem.removesuffix(suffix)}.pie")
        if stem.endswith(suffix) and base is not None:
            return dataclasses.replace(base, style=f"in the {faction} style")
    side = _SIDE.fullmatch(stem)
    if side and f"{side[1]}{side[3]}.pie" in meanings:
        where = "left" if side[2] == "l" else "right"
        return dataclasses.replace(meanings[f"{side[1]}{side[3]}.pie"],
                                   style=f"on the {where} side of a vehicle")
    kind = next((k for folder, k in _FOLDER_KINDS.items() if member.startswith(folder)), "model")
    return _Meaning(kind, "", "", [], True)


def _title(meaning: _Meaning) -> str:
    if not meaning.name:
        return meaning.kind
    return {"structure base": f"{meaning.name} foundation", "turret mount": f"{meaning.name} mount",
            "body": f"{meaning.name} body"}.get(meaning.kind, meaning.name)


# The words a label is matched on, per kind. The rightmost class keyword wins, so the
# authority goes last: a weapon's sub class ('vtol flashlight' is an energy weapon, not a
# vtol), "mount" and "foundation" for those parts, a structure's or feature's own name
# before its stats type.
_CLASSIFY = {"weapon": "{name} {detail}", "turret": "{name} {detail}",
             "turret mount": "{detail} {name} mount", "structure base": "{detail} {name} foundation",
             "body": "{name} body"}


def _classify_text(meaning: _Meaning) -> str:
    layout = _CLASSIFY.get(meaning.kind, "{kind} {detail} {name}")
    return layout.format(kind=meaning.kind, detail=meaning.detail, name=meaning.name)


def _texts(meaning: _Meaning) -> list[str]:
    """2-5 sentences from the stats (see _KIND_TEXTS)."""
    name, detail, kind = meaning.name, meaning.detail, meaning.kind
    if not name:
        return [with_article(kind), f"{with_article(kind)} from a real-time strategy game"]
    texts = _KIND_TEXTS[kind](name, detail, meaning.extra)
    if meaning.style:
        # Propulsion names are plural ('tracks') and take no article.
        subject = name if kind == "propulsion" else with_article(_title(meaning))
        texts.append(f"{subject} {meaning.style}")
    return texts[:5]


def _structure_texts(name, detail, extra):
    texts = [with_article(name), f"{with_article(name)}, {with_article(detail or 'base')} structure"]
    if extra:
        texts.append(f"{with_article(name)} armed with {with_article(join_words(extra))}")
    return texts


_KIND_TEXTS = {
    "structure": _structure_texts,
    "structure base": lambda name, detail, extra: [
        f"the foundation of {with_article(name)}", f"a flat base plate under {with_article(name)}"],
    # A feature's type is left out of its texts: wrecks are of type BOULDER.
    "feature": lambda name, detail, extra: [with_article(name), f"{with_article(name)} on a battlefield"],
    "body": lambda name, detail, extra: [
        f"{with_article(name)} body",
        f"{with_article(detail or 'combat')} {extra[0] if extra else 'vehicle'} body",
        f"the hull of {with_article(name)} {extra[0] if extra else 'vehicle'}"],
    "propulsion": lambda name, detail, extra: [
        name, f"{detail or name} propulsion" + (f" for {with_article(extra[0])} vehicle" if extra else ""),
        f"the {name} of a combat vehicle"],
    "weapon": lambda name, detail, extra: [
        with_article(name), f"{with_article(name)}, {with_article(detail or 'weapon')} weapon",
        *[f"{with_article(e)} weapon" for e in extra]],
    "turret mount": lambda name, detail, extra: [
        f"the turret mount of {with_article(name)}", f"a turret base for {with_article(detail or 'weapon')}"],
    "turret": lambda name, detail, extra: [
        with_article(name), f"{with_article(name)}, {with_article(detail)} turret"],
}
