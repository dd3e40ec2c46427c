"""Red Eclipse (redeclipse-data): the game's map models, weapons, characters and vanities.

The game (a Cube 2 / Tesseract engine) describes each model by a script beside it
(obj.cfg, iqm.cfg, md5.cfg, md3.cfg): `objload hydrant.obj`, `objskin * diffuse.png`,
`mdlpitch 180`, `exec actors/player/player.cfg` ... This source reads those scripts the way
the engine does, one object per distinct mesh file a script loads:

  OBJ      through trimesh, its groups named by `g` as the engine names them; the mtllib is
           never read (the engine ignores it too: skins come from the script)
  IQM      a reader of the binary format (iqm.txt of the IQM SDK), bind pose only
  md5mesh  text; bind-pose positions from the joints and weights
  md3      binary (Quake 3), frame 0

Frames, as the engine's loaders show (src/engine/{obj,iqm,md5,md3}.h): IQM, md5 and md3 are
z up (Blender's frame, clockwise triangles); OBJ is y up (the engine turns it by
(x, y, z) -> (z, -x, y)). Every mesh is brought to z up first, turned by the script's
mdlyaw/mdlpitch/mdlroll, then to the glTF frame.

Skipped, as not objects of their own: animation-only .iqm/.md5anim files (no script loads
them), first-person variants (hwep folders, hud meshes, headless bodies), the right-hand
twin of a left/right pair, flipped (mirrored) and lit ('on') copies, and scripts loading a
mesh file already taken (byte-identical or the same path; the script nearest the mesh
describes it). mdlscale and mdltrans are not applied: an object's size and place are the
corpus's to normalise.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from training.recipes.sources import (
    MAX_FACES, MAX_VERTICES, SourceError, SourceObject, bounded_image, check_counts, read_bounded,
    sentence_words, z_up_to_y_up)
from training.recipes.sweethome3d import classify

NAME = "redeclipse"
PACKAGES = ("redeclipse-data",)
DATA = Path("usr/share/games/redeclipse/data")
CLASSES_FILE = Path(__file__).with_name("redeclipse_classes.json")
MIN_ITEMS = 5

MAX_MESHES = 1024        # meshes in one model file (the game's largest has 3)
MAX_EXEC_DEPTH = 4       # `exec` nesting in model scripts (the game's goes 1 deep)
FORMATS = ("obj", "iqm", "md5", "md3")
SKIP_FOLDERS = {"maps"}  # map scripts place models; they describe none
# Path words of models that are views of another model, not objects of their own: first-
# person views, a mirrored twin (right of a left, a flipped desk), a lit state of an unlit one.
VARIANT_WORDS = {"hwep", "hud", "headless", "right", "flip", "on"}

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelScript:
    """What a model script says: the mesh it loads, its skins and its rotation."""

    cfg: Path                      # the script, relative to the data folder
    mesh: Path                     # the mesh file, relative to the data folder
    format: str                    # one of FORMATS
    skins: dict[str, Path]         # mesh name (or '*') -> texture, relative to the data folder
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # yaw, pitch, roll in degrees


# ---- model scripts -------------------------------------------------------------------------

def read_script(data: Path, cfg: Path) -> ModelScript | None:
    """The model a script (relative to `data`) loads, or None if it loads no mesh.

    Paths resolve against the script's folder (or an `iqmdir`/`md5dir`) and must stay in
    the collection folder the script is in (data/<first folder>), else SourceError.
    """
    state = {"dir": cfg.parent, "mesh": None, "format": None, "skins": {}, "rotation": [0.0, 0.0, 0.0]}
    _run_script(data, cfg, cfg, state, depth=0)
    if state["mesh"] is None:
        return None
    return ModelScript(cfg, state["mesh"], state["format"], state["skins"], tuple(state["rotation"]))


def _run_script(data: Path, top: Path, cfg: Path, state: dict, depth: int) -> None:
    if depth > MAX_EXEC_DEPTH:
        raise SourceError(f"{data / top}: `exec` nested deeper than {MAX_EXEC_DEPTH}")
    for words in _commands(read_bounded(data / cfg).decode("utf-8", "replace")):
        command, args = words[0], words[1:]
        fmt, verb = command[:3], command[3:]
        if fmt in FORMATS and verb == "load" and args and state["mesh"] is None:
            state["mesh"], state["format"] = _inside(data, top, state["dir"], args[0]), fmt
        elif fmt in FORMATS and verb == "skin" and len(args) >= 2:
            state["skins"][args[0]] = _inside(data, top, state["dir"], _texture_name(args[1]))
        elif fmt in FORMATS and verb == "dir" and args:
            state["dir"] = _inside(data, top, Path(), args[0])
        elif command in ("mdlyaw", "mdlpitch", "mdlroll") and args:
            _set_angle(state["rotation"], ("mdlyaw", "mdlpitch", "mdlroll").index(command), args[0])
        elif command == "exec" and args:
            _run_script(data, top, _inside(data, top, Path(), args[0]), state, depth + 1)


def _commands(text: str) -> Iterator[list[str]]:
    """The script's commands as word lists: `//` comments dropped, quotes kept together."""
    for line in text.splitlines():
        line = re.sub(r'^((?:[^"/]|"[^"]*"|/(?!/))*)//.*$', r"\1", line)
        for statement in line.split(";"):
            words = [m.group(1) if m.group(1) is not None else m.group(2)
                     for m in re.finditer(r'"([^"]*)"|([^\s"\[\]]+)', statement)]
            if words:
                yield words


def _texture_name(word: str) -> str:
    """'<dds>../skin.png' -> '../skin.png': the engine's load options are no part of the name."""
    return re.sub(r"^(<[^>]*>)+", "", word)


def _set_angle(rotation: list[float], axis: int, word: str) -> None:
    try:
        rotation[axis] = float(word)
    except ValueError:  # jojo/teamsigma writes `mdlpitch "" 1`: no angle, and the engine reads 0
        pass


def _inside(data: Path, top: Path, base: Path, name: str) -> Path:
    """`name` resolved against `base` (both relative to data), refused if it leaves the
    collection folder of script `top`."""
    collection = (data / top.parts[0]).resolve()
    if Path(name).is_absolute():
        raise SourceError(f"{data / top}: {name!r} is an absolute path")
    path = (data / base / name).resolve()
    if not path.is_relative_to(collection):
        raise SourceError(f"{data / top}: {name!r} leaves {top.parts[0]}/")
    return path.relative_to(data.resolve())


# ---- mesh readers: each returns parts in the z-up frame, counter-clockwise -----------------

@dataclasses.dataclass
class Part:
    name: str                # the engine's mesh name, which skins refer to
    vertices: np.ndarray     # (n, 3) float64
    faces: np.ndarray        # (m, 3) int64
    uv: np.ndarray | None    # (n, 2), v up (glTF's texture origin is flipped by trimesh)
    texture: str | None = None  # a texture the file itself names (md5 shader, iqm material)


def _checked(path: Path, name: str, vertices, faces, uv) -> Part:
    """A part whose indices and numbers are sound, else SourceError naming the file."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise SourceError(f"{path}: mesh {name!r} has a triangle index outside its "
                          f"{len(vertices)} vertices")
    if not np.isfinite(vertices).all() or (uv is not None and not np.isfinite(uv).all()):
        raise SourceError(f"{path}: mesh {name!r} has non-finite coordinates")
    return Part(name, vertices, faces, None if uv is None else np.asarray(uv, dtype=np.float64))


def _flip_v(uv: np.ndarray) -> np.ndarray:
    """Texture coordinates with the origin at the top (the engine's) -> at the bottom."""
    return np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)


def read_obj(path: Path) -> list[Part]:
    data = read_bounded(path)
    check_counts(str(path), data.count(b"\nv "), data.count(b"\nf "))
    try:
        loaded = trimesh.exchange.obj.load_obj(io.BytesIO(data), split_groups=True,
                                               group_material=False, skip_materials=True)
    except (IndexError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SourceError(f"{path}: not a readable OBJ ({type(exc).__name__}: {exc})") from None
    parts = []
    for group, kwargs in loaded.get("geometry", {}).items():
        if "faces" not in kwargs:
            continue
        visual = kwargs.get("visual")
        uv = getattr(visual, "uv", None)
        v = np.asarray(kwargs["vertices"], dtype=np.float64)
        if uv is not None and len(uv) != len(v):
            uv = None
        # y-up OBJ -> the engine's turn (z, -x, y) without its mirror: (z, x, y)
        parts.append(_checked(path, group, v[:, [2, 0, 1]], _fan(kwargs["faces"]), uv))
    return parts


def _fan(faces) -> np.ndarray:
    """Polygons of one size (trimesh leaves all-quad or all-n-gon groups as they are) as
    triangles fanned from their first corner."""
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] < 3:
        return faces.reshape(-1, 3)
    return np.concatenate([faces[:, [0, k, k + 1]] for k in range(1, faces.shape[1] - 1)])


IQM_HEADER = struct.Struct("<16s27I")
IQM_FORMATS = {0: "i1", 1: "u1", 2: "<i2", 3: "<u2", 4: "<i4", 5: "<u4", 6: "<f2", 7: "<f4", 8: "<f8"}
IQM_POSITION, IQM_TEXCOORD = 0, 1


def read_iqm(path: Path) -> list[Part]:
    buf = read_bounded(path)
    if len(buf) < IQM_HEADER.size or not buf.startswith(b"INTERQUAKEMODEL\0"):
        raise SourceError(f"{path}: not an IQM file (no INTERQUAKEMODEL header)")
    h = dict(zip(("magic version filesize flags num_text ofs_text num_meshes ofs_meshes "
                  "num_vertexarrays num_vertexes ofs_vertexarrays num_triangles ofs_triangles "
                  "ofs_adjacency num_joints ofs_joints num_poses ofs_poses num_anims ofs_anims "
                  "num_frames num_framechannels ofs_frames ofs_bounds num_comment ofs_comment "
                  "num_extensions ofs_extensions").split(), IQM_HEADER.unpack_from(buf)))
    if h["version"] != 2:
        raise SourceError(f"{path}: IQM version {h['version']}, only 2 is read")
    if h["filesize"] > len(buf):
        raise SourceError(f"{path}: truncated ({len(buf)} of {h['filesize']} bytes)")
    if h["num_meshes"] == 0:
        raise SourceError(f"{path}: no meshes (an animation-only IQM)")
    if h["num_meshes"] > MAX_MESHES or h["num_vertexarrays"] > 64:
        raise SourceError(f"{path}: {h['num_meshes']} meshes / {h['num_vertexarrays']} vertex "
                          "arrays is above the limit; a corrupt file?")
    check_counts(str(path), h["num_vertexes"], h["num_triangles"])
    n = h["num_vertexes"]
    arrays = _array_at(path, buf, h["ofs_vertexarrays"], h["num_vertexarrays"], "<u4", 5)
    columns = {}
    for kind, _flags, fmt, size, offset in arrays.tolist():
        if kind in (IQM_POSITION, IQM_TEXCOORD) and fmt in IQM_FORMATS:
            columns[kind] = _array_at(path, buf, offset, n, IQM_FORMATS[fmt], size).astype(np.float64)
    if IQM_POSITION not in columns or columns[IQM_POSITION].shape[1] != 3:
        raise SourceError(f"{path}: no 3-component vertex positions")
    uv = columns.get(IQM_TEXCOORD)
    uv = _flip_v(uv) if uv is not None and uv.shape[1] == 2 else None
    triangles = _array_at(path, buf, h["ofs_triangles"], h["num_triangles"], "<u4", 3).astype(np.int64)
    text = buf[h["ofs_text"]:h["ofs_text"] + h["num_text"]]
    parts = []
    for name, material, first_v, count_v, first_t, count_t in _array_at(
            path, buf, h["ofs_meshes"], h["num_meshes"], "<u4", 6).tolist():
        if first_v + count_v > n or first_t + count_t > len(triangles):
            raise SourceError(f"{path}: a mesh's vertex or triangle range runs past the arrays")
        faces = triangles[first_t:first_t + count_t, ::-1] - first_v  # clockwise -> ccw
        vs = slice(first_v, first_v + count_v)
        part = _checked(path, _iqm_text(path, text, name), columns[IQM_POSITION][vs], faces,
                        None if uv is None else uv[vs])
        part.texture = _iqm_text(path, text, material) or None
        parts.append(part)
    return parts


def _array_at(path: Path, buf: bytes, offset: int, count: int, dtype: str, width: int) -> np.ndarray:
    """`count` rows of `width` items at `offset`, refused if they run outside the file."""
    itemsize = np.dtype(dtype).itemsize
    if offset < 0 or offset + count * width * itemsize > len(buf):
        raise SourceError(f"{path}: an array at byte {offset} runs past the end of the file")
    return np.frombuffer(buf, dtype=dtype, count=count * width, offset=offset).reshape(count, width)


def _iqm_text(path: Path, text: bytes, offset: int) -> str:
    if offset > len(text):
        raise SourceError(f"{path}: a name points outside the text block")
    return text[offset:].split(b"\0", 1)[0].decode("utf-8", "replace")


# a vertex, its weights (the game's have up to 4) and the triangles of the largest model allowed
MAX_MD5_LINES = 5 * MAX_VERTICES + MAX_FACES
_MD5_NUMBER = r"(-?[\d.]+(?:e[-+]?\d+)?)"
_MD5_JOINT = re.compile(r'^\s*"[^"]*"\s+(-?\d+)\s+\(\s*' + r"\s+".join([_MD5_NUMBER] * 3)
                        + r"\s*\)\s*\(\s*" + r"\s+".join([_MD5_NUMBER] * 3) + r"\s*\)", re.I)
_MD5_VERT = re.compile(r"^\s*vert\s+(\d+)\s+\(\s*" + _MD5_NUMBER + r"\s+" + _MD5_NUMBER
                       + r"\s*\)\s+(\d+)\s+(\d+)", re.I)
_MD5_TRI = re.compile(r"^\s*tri\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", re.I)
_MD5_WEIGHT = re.compile(r"^\s*weight\s+(\d+)\s+(\d+)\s+" + _MD5_NUMBER + r"\s+\(\s*"
                         + r"\s+".join([_MD5_NUMBER] * 3) + r"\s*\)", re.I)
_MD5_COUNT = re.compile(r"^\s*(numJoints|numMeshes|numverts|numtris|numweights)\s+(-?\d+)", re.I)


def read_md5mesh(path: Path) -> list[Part]:
    lines = read_bounded(path).decode("utf-8", "replace").splitlines()
    if len(lines) > MAX_MD5_LINES:
        raise SourceError(f"{path}: {len(lines)} lines is above the limit ({MAX_MD5_LINES}); a corrupt file?")
    versions = {m[1] for line in lines[:20] if (m := re.match(r"\s*MD5Version\s+(\S+)", line))}
    if versions - {"10"}:  # the game's own exporter writes none at all; the engine allows that
        raise SourceError(f"{path}: MD5Version {', '.join(sorted(versions))}, only 10 is read")
    if not any(re.match(r"\s*mesh\s*\{", line) for line in lines):
        raise SourceError(f"{path}: not an md5mesh (no mesh block)")
    joints, blocks = [], []
    block = None
    for line in lines:
        if (m := _MD5_JOINT.match(line)) and block is None:
            joints.append([float(x) for x in m.groups()[1:]])
        elif re.match(r"\s*mesh\s*\{", line):
            block = {"name": "", "shader": None, "counts": {}, "vert": [], "tri": [], "weight": []}
            blocks.append(block)
        elif block is not None:
            _md5_line(path, line, block)
    if not joints:
        raise SourceError(f"{path}: no joints")
    joints = np.asarray(joints, dtype=np.float64)
    check_counts(str(path), sum(len(b["vert"]) for b in blocks), sum(len(b["tri"]) for b in blocks))
    if len(blocks) > MAX_MESHES:
        raise SourceError(f"{path}: {len(blocks)} meshes is above the limit ({MAX_MESHES})")
    return [_md5_part(path, joints, b) for b in blocks if b["vert"] and b["tri"]]


def _md5_line(path: Path, line: str, block: dict) -> None:
    if m := re.match(r"\s*//\s*meshes:\s*(.*?)\s*$", line):
        block["name"] = m.group(1)
    elif m := re.match(r'\s*shader\s+"([^"]*)"', line):
        block["shader"] = m.group(1) or None
    elif m := _MD5_VERT.match(line):
        block["vert"].append((int(m[1]), float(m[2]), float(m[3]), int(m[4]), int(m[5])))
    elif m := _MD5_TRI.match(line):
        block["tri"].append(tuple(int(x) for x in m.groups()))
    elif m := _MD5_WEIGHT.match(line):
        block["weight"].append((int(m[1]), int(m[2]), *(float(x) for x in m.groups()[2:])))
    elif m := _MD5_COUNT.match(line):
        block["counts"][m[1].lower()] = int(m[2])


def _md5_part(path: Path, joints: np.ndarray, block: dict) -> Part:
    """Bind pose: each vertex is the bias-weighted sum of its weights' positions, each
    turned by its joint's orientation and moved to the joint."""
    verts, tris, weights = (np.asarray(block[k], dtype=np.float64) for k in ("vert", "tri", "weight"))
    nv, nw = len(verts), len(weights)
    if block["counts"].get("numverts", nv) != nv or block["counts"].get("numtris", len(tris)) != len(tris):
        raise SourceError(f"{path}: mesh {block['name']!r} declares other counts than it lists")
    if (np.sort(verts[:, 0]) != np.arange(nv)).any() or not nw:
        raise SourceError(f"{path}: mesh {block['name']!r} has missing or repeated vertices")
    verts, weights = verts[np.argsort(verts[:, 0])], weights[np.argsort(weights[:, 0])]
    start, count = verts[:, 3].astype(np.int64), verts[:, 4].astype(np.int64)
    if (start + count > nw).any() or (count < 1).any() or (weights[:, 0] != np.arange(nw)).any():
        raise SourceError(f"{path}: mesh {block['name']!r} has vertices pointing past its weights")
    joint = weights[:, 1].astype(np.int64)
    if (joint >= len(joints)).any():
        raise SourceError(f"{path}: mesh {block['name']!r} has a weight on a joint it lacks")
    placed = _md5_rotate(joints[joint, 3:], weights[:, 3:]) + joints[joint, :3]
    owner = np.repeat(np.arange(nv), count)
    rows = np.repeat(start, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    positions = np.zeros((nv, 3))
    np.add.at(positions, owner, placed[rows] * weights[rows, 2:3])
    if (np.sort(tris[:, 0]) != np.arange(len(tris))).any():
        raise SourceError(f"{path}: mesh {block['name']!r} has missing or repeated triangles")
    faces = tris[np.argsort(tris[:, 0]), 1:].astype(np.int64)[:, ::-1]  # clockwise -> ccw
    part = _checked(path, block["name"], positions, faces, _flip_v(verts[:, 1:3]))
    part.texture = block["shader"]
    return part


def _md5_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """v turned by unit quaternions (x, y, z) whose w is implied (<= 0, as md5 stores them)."""
    w = -np.sqrt(np.clip(1.0 - (q ** 2).sum(axis=1), 0.0, None))[:, None]
    t = 2.0 * np.cross(q, v)
    return v + w * t + np.cross(q, t)


MD3_HEADER = struct.Struct("<4si64si4i4i")      # id, version, name, flags, counts, offsets
MD3_SURFACE = struct.Struct("<4s64si4i5i")      # id, name, flags, counts, offsets + size


def read_md3(path: Path) -> list[Part]:
    buf = read_bounded(path)
    if len(buf) < MD3_HEADER.size or buf[:4] != b"IDP3":
        raise SourceError(f"{path}: not an md3 file (no IDP3 header)")
    _id, version, _name, _flags, frames, _tags, surfaces, _skins, _of, _ot, offset, _end = \
        MD3_HEADER.unpack_from(buf)
    if version != 15 or frames < 1 or not 0 < surfaces <= MAX_MESHES:
        raise SourceError(f"{path}: md3 version {version}, {frames} frames, {surfaces} surfaces: "
                          "not a readable model")
    parts = []
    for _ in range(surfaces):
        if offset < 0 or offset + MD3_SURFACE.size > len(buf):
            raise SourceError(f"{path}: a surface runs past the end of the file")
        part, size = _md3_surface(path, buf, offset)
        parts.append(part)
        offset += size
    return parts


def _md3_surface(path: Path, buf: bytes, at: int) -> tuple[Part, int]:
    (_id, name, _flags, _frames, _shaders, nv, nt,
     ofs_tris, _ofs_shaders, ofs_uv, ofs_verts, size) = MD3_SURFACE.unpack_from(buf, at)
    if nv < 0 or nt < 0 or size <= 0:
        raise SourceError(f"{path}: a surface has negative counts or size")
    check_counts(str(path), nv, nt)
    tris = _array_at(path, buf, at + ofs_tris, nt, "<i4", 3).astype(np.int64)
    uv = _array_at(path, buf, at + ofs_uv, nv, "<f4", 2).astype(np.float64)
    xyz = _array_at(path, buf, at + ofs_verts, nv, "<i2", 4)[:, :3] / 64.0  # frame 0
    label = name.split(b"\0", 1)[0].decode("latin-1")
    return _checked(path, label, xyz, tris[:, ::-1], _flip_v(uv)), size


READERS = {"obj": read_obj, "iqm": read_iqm, "md5": read_md5mesh, "md3": read_md3}


# ---- meshes with their skins, in the glTF frame --------------------------------------------

def load_model(data: Path, script: ModelScript) -> list[trimesh.Trimesh]:
    """The script's mesh in the glTF frame, each part with its skin; SourceError names the file."""
    parts = READERS[script.format](data / script.mesh)
    turn = _rotation(*script.rotation)
    images: dict[Path, Image.Image | None] = {}
    meshes = []
    for part in parts:
        if not len(part.faces):
            continue
        mesh = trimesh.Trimesh(z_up_to_y_up(part.vertices @ turn.T), part.faces, process=False)
        texture = _skin(data, script, part)
        if texture is not None and texture not in images:
            images[texture] = _image(data / texture)
        image = images.get(texture)
        if image is not None and part.uv is not None:
            # white diffuse: trimesh's default grey would darken the texture by 0.4
            material = trimesh.visual.material.SimpleMaterial(image=image, diffuse=(255, 255, 255, 255))
            mesh.visual = trimesh.visual.TextureVisuals(uv=part.uv, material=material)
        meshes.append(mesh)
    if not meshes:
        raise SourceError(f"{data / script.mesh}: no triangles")
    return meshes


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The engine's model turn (yaw about z, pitch about x, roll about y, roll applied first)
    in the unmirrored frame: the engine's y is the file's -y, so yaw and pitch change sign."""
    def turn(axis: int, degrees: float) -> np.ndarray:
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i] = m[j, j] = c
        m[i, j], m[j, i] = -s, s
        return m
    return turn(2, -yaw) @ turn(0, -pitch) @ turn(1, -roll)


def _skin(data: Path, script: ModelScript, part: Part) -> Path | None:
    """The script's skin for the part (its mesh name, one of 'a|b', or '*'), else a texture
    the file names beside it, else the engine's default skin.* in the mesh's folder."""
    for key, texture in script.skins.items():
        if key == "*" or part.name in key.split("|"):
            if (data / texture).is_file():
                return texture
    folder = script.mesh.parent
    named = [folder / part.texture] if part.texture and "/" not in part.texture else []
    for candidate in named + [folder / f"skin.{ext}" for ext in ("png", "jpg", "tga")]:
        if (data / candidate).is_file():
            return candidate
    return None


def _image(path: Path) -> Image.Image | None:
    """The texture, bounded; None (the part keeps no texture) if it is not an image."""
    try:
        image = Image.open(io.BytesIO(read_bounded(path)))
        image.load()
        return bounded_image(image)
    except (OSError, ValueError, Image.DecompressionBombError, SourceError) as exc:
        log.warning("%s: texture not readable (%s); the part stays untextured", path, exc)
        return None


# ---- discovery, names, texts, classes ------------------------------------------------------

CATEGORIES = {  # top folders that say what a model is; the others are authors' folders
    "actors": "a game character", "weapons": "a weapon", "projectiles": "a projectile",
    "vanities": "a wearable accessory for a game character", "vegetation": "a plant",
    "props": "a game prop",
}
GENERIC_WORDS = {"model", "mesh", "tris", "item", "off", "label", "left", "v"}
WORD_FIXES = {"proj": "projectile", "gibs": "gib", "gaz": "gas", "cab": "cabinet"}


def scripts(data: Path) -> tuple[list[ModelScript], list[str]]:
    """One script per mesh that is an object of its own (see the module docstring), and
    the failures as 'cfg: reason'."""
    found, failures, loading, variants = {}, [], 0, 0
    for cfg in sorted(data.rglob("*.cfg")):
        relative = cfg.relative_to(data)
        if relative.parts[0] in SKIP_FOLDERS:
            continue
        try:
            if not cfg.resolve().is_relative_to(data.resolve()):
                raise SourceError(f"{cfg}: links outside {data}")
            script = read_script(data, relative)
            if script is not None and not (data / script.mesh).is_file():
                raise SourceError(f"{cfg}: loads {script.mesh}, which is missing")
        except SourceError as exc:
            failures.append(str(exc))
            continue
        if script is None:
            continue
        loading += 1
        if _is_variant(script):
            variants += 1
        elif script.mesh not in found or _nearness(script) < _nearness(found[script.mesh]):
            found[script.mesh] = script
    kept = _unique_contents(data, found.values())
    log.info("%s: %d scripts load a mesh: %d models, %d variants, %d of a mesh already taken",
             data, loading, len(kept), variants, loading - variants - len(kept))
    return kept, failures


def _is_variant(script: ModelScript) -> bool:
    words = {w for part in (*script.cfg.parent.parts, script.mesh.stem)
             for w in re.split(r"[\W_]+", part.lower())}
    return bool(words & VARIANT_WORDS)


def _nearness(script: ModelScript) -> tuple[int, str]:
    """Folder steps from the script to its mesh (the mesh's own script first), then the path."""
    cfg, mesh = script.cfg.parent.parts, script.mesh.parent.parts
    common = len([a for a, b in zip(cfg, mesh) if a == b])
    return len(cfg) + len(mesh) - 2 * common, str(script.cfg)


def _unique_contents(data: Path, candidates) -> list[ModelScript]:
    """Drop scripts whose mesh file is byte-identical to one already kept."""
    kept, seen = [], set()
    for script in sorted(candidates, key=lambda s: str(s.mesh)):
        try:
            digest = hashlib.sha256(read_bounded(data / script.mesh)).hexdigest()
        except SourceError:
            digest = str(script.mesh)  # unreadable: its load will say why
        if digest not in seen:
            seen.add(digest)
            kept.append(script)
    return kept


def model_name(script: ModelScript, overrides: dict[str, str]) -> str:
    """Words of the mesh's folder below the top folder: 'dziq/palm_tree01a' -> 'palm tree'."""
    folder = script.mesh.parent.as_posix()
    if folder in overrides:
        return overrides[folder]
    words = []
    for word in sentence_words(" ".join(script.mesh.parent.parts[1:]) or script.mesh.stem).split():
        word = re.sub(r"(?<=[a-z])\d+[a-z]?$|^\d+$", "", word)
        word = WORD_FIXES.get(word, word)
        if word and word not in GENERIC_WORDS and word not in words:
            words.append(word)
    return " ".join(words) or sentence_words(script.mesh.stem)


def _article(noun: str) -> str:
    """'a hydrant', 'an eye', and plurals as they are ('boots', 'hanging plants')."""
    if re.search(r"[^su]s$", noun):
        return noun
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def model_texts(script: ModelScript, name: str) -> list[str]:
    top = "projectiles" if "proj" in script.mesh.parent.parts else script.mesh.parts[0]
    author = f" by {top}" if top != "unnamed" else ""  # data/unnamed/: authors not named
    kind = CATEGORIES.get(top, f"a map model{author}")
    return [_article(name),
            f"{_article(name)}, {kind} from the game Red Eclipse",
            f"a 3D model of {_article(name)} from a first-person shooter game"]


def load_classes(path: Path = CLASSES_FILE) -> dict:
    data = json.loads(Path(path).read_text())
    return {"classes": data["classes"], "exclude": data.get("exclude", []),
            "names": data.get("names", {})}


def objects(root: Path) -> Iterator[SourceObject]:
    data = Path(root) / DATA
    if not data.is_dir():
        raise SourceError(f"{data}: missing; unpack {', '.join(PACKAGES)} into {root}")
    keyword_map = load_classes()
    found, failures = scripts(data)
    for failure in failures:
        log.warning("skipped %s", failure)
    names = {s.mesh: model_name(s, keyword_map["names"]) for s in found}
    # the top folder goes first so a name's own words win (the rightmost keyword does)
    matched = {s.mesh: classify(f"{s.mesh.parts[0]} {names[s.mesh]}", keyword_map) for s in found}
    counts = collections.Counter(matched.values())
    for script in found:
        label = matched[script.mesh]
        yield SourceObject(
            source=NAME, id=script.mesh.with_suffix("").as_posix(), name=names[script.mesh],
            label=label if label and counts[label] >= MIN_ITEMS else None,
            texts=model_texts(script, names[script.mesh]),
            files=[(DATA / p).as_posix() for p in (script.cfg, script.mesh, *script.skins.values())
                   if (data / p).is_file()],
            load=lambda s=script: load_model(data, s))
