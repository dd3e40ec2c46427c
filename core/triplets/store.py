"""The triplet store: points, rendered views and captions per 3D object, on disk.

ULIP-2 trains on (points, views, captions) triplets made from assets alone. This module
is the one place that knows how they are laid out. It needs only numpy and the standard
library, so the Blender extension writes records with it inside an artist's Blender
(where there is no torch and no PIL); captioning and reading for training happen in the
ulip2 environment.

Format, version 2
-----------------
::

    STORE/
      store.json              {"format": "ulip2-triplets", "version": 2, "created": ...}
      manifest.jsonl          append-only event log, one JSON object per line (below)
      records/AB/CD/KEY/      one folder per object; KEY is 64 hex digits (sha-256) and
                              AB, CD are its first four: 65,536 shard folders, so a
                              million records make about 15 entries per folder
        record.json           what the record is (below)
        points.npy            (N, 6) float16: x y z on the unit sphere in the encoder's
                              y-up frame, r g b in 0..1 (ULIP-2 uses N = 10,000)
        view_00.png ...       V renders (RGBA, transparent background), ring order
      tmp/                    records being written, and KEY.old: the old record while a
                              rewrite swaps it (readers look there); what killed writers left
                              is cleared by the next writer that has the store to itself

Keys are content hashes: for an asset file, the sha-256 of its bytes; for an object marked
as an asset in a .blend (each is its own record), the sha-256 of the file's key, a slash
and the object's name (`key_for_asset`), so it changes whenever the file does; for an
object in a Blender scene, the sha-256 of its evaluated world-space geometry and its name
(see `key_for_arrays`). The same content lands on the same key, so reruns skip it. A .blend
with no marked assets is one record of all its renderable objects, keyed as a file.

Manifest events (the last event for a key decides its state):

    {"key", "event": "done",      "time", "source", "object", "views"}   points + views written
    {"key", "event": "captioned", "time", "captioner", "space"}          captions in record.json
    {"key", "event": "failed",    "time", "source", "reason"}            no record folder

record.json::

    {"format_version": 2, "key": ..., "created": ...,
     "source": {"path": str | null, "object": str, "kind": "file" | "asset" | "scene"},
                                           file: all of a file's objects (object: the file's
                                           stem); asset: one marked object of a .blend
     "points": {"file": "points.npy", "count": N, "columns": ["x","y","z","r","g","b"],
                "dtype": "float16", "seed": int, "frame": "y-up"},
     "views": {"files": ["view_00.png", ...], "resolution": int, "engine": str,
               "samples": int, "elevation_deg": float, "azimuth_deg": [...]},
     "facts": {"object_names": [...], "material_names": [...], "dimensions": [x, y, z],
               "triangles": int},          measured in Blender (the metadata captioner reads them)
     "captions": null | {
         "captioner": "blip2" | "blip" | "metadata", "model": str | null,
         "vision_model": bool,             false: the captions were not written by
                                           looking at the images (the metadata captioner)
         "space": str, "ranking": "image-text" | "text-consensus", "k": int,
         "views": [{"candidates": [{"text": str, "score": float}, ...],
                    "chosen": int, "caption": str}, ...],   one entry per view
         "texts": [str]}}                  optional: what the asset's library says of it
                                           (names, tags), trained on beside the views' captions

Version 1 (read, and upgraded by the first write) kept the points of Blender-rendered
records in Blender's z-up world; its records carry no "frame" and are turned y-up as they
are read (Record.points), so every reader sees one frame.

Atomicity: a record is written into tmp/ and renamed into place (os.replace) before its
"done" line is appended; a rewrite first renames the old record to tmp/KEY.old, where
readers find it until the new one is in place. A caption update rewrites record.json the
same way before its "captioned" line. A kill at any moment leaves either the old record or
the new one. A record folder without a manifest line (killed between rename and append) is
simply redone; a torn last manifest line is ignored by readers. Readers take whether a
record is captioned from its record.json: a rewrite killed before its "done" line leaves the
new, uncaptioned record under the old one's "captioned" event.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import Ulip2Error
from core.paths import file_sha256
from core.sampling import y_up

FORMAT = "ulip2-triplets"
VERSION = 2
READ_VERSIONS = (1, 2)
#: The one frame records are written in (glTF's, as trimesh reads every format).
FRAME = "y-up"
POINT_COLUMNS = ["x", "y", "z", "r", "g", "b"]
DONE, CAPTIONED, FAILED = "done", "captioned", "failed"

try:  # POSIX: serialise manifest appends across worker processes
    import fcntl
except ImportError:  # Windows (an artist's Blender): one writer per store there
    fcntl = None


class StoreError(Ulip2Error):
    """A triplet store that is missing, of another format or version, or a record that is not in it."""


def key_for_file(path: str | os.PathLike) -> str:
    """sha-256 of a file's bytes (the record key of an asset file)."""
    return file_sha256(path)


def key_for_asset(file_key: str, name: str) -> str:
    """Key of the object `name` marked as an asset in the .blend whose key is `file_key`."""
    return hashlib.sha256(f"{file_key}/{name}".encode()).hexdigest()


def key_for_arrays(name: str, arrays: Iterable[np.ndarray]) -> str:
    """sha-256 of a name and arrays' dtypes, shapes and bytes (the key of a scene object)."""
    digest = hashlib.sha256(name.encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def view_name(index: int) -> str:
    return f"view_{index:02d}.png"


@dataclass
class Record:
    """One stored triplet; points and views are read from disk when asked for."""

    key: str
    path: Path
    meta: dict

    @property
    def captions(self) -> list[str] | None:
        """The chosen caption per view, then the library's texts; None while uncaptioned."""
        block = self.meta.get("captions")
        return None if block is None else [view["caption"] for view in block["views"]] + block.get("texts", [])

    def points(self) -> np.ndarray:
        """(N, 6) points in the encoder's y-up frame, whichever version wrote them."""
        points = np.load(self.path / self.meta["points"]["file"])
        if "frame" in self.meta["points"] or self.meta["views"].get("engine", "none") == "none":
            return points  # recorded y-up, or sampled by trimesh (y-up) in version 1
        return y_up(points).astype(points.dtype)  # version 1: as Blender sampled it, z-up

    def view_paths(self) -> list[Path]:
        return [self.path / name for name in self.meta["views"]["files"]]

    def views(self) -> list:
        """The views as PIL RGBA images (the ulip2 environment has PIL; Blender does not)."""
        from PIL import Image

        images = []
        for path in self.view_paths():
            with Image.open(path) as image:
                images.append(image.convert("RGBA"))
        return images


class RecordWriter:
    """A record being built in tmp/; `commit` moves it into place and logs it."""

    def __init__(self, store: TripletStore, key: str):
        store._begin_writing()
        self.store, self.key = store, key
        self.path = Path(tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=store.root / "tmp"))

    def view_path(self, index: int) -> Path:
        """Where view `index` is to be rendered (PNG)."""
        return self.path / view_name(index)

    def commit(self, points: np.ndarray, meta: dict) -> Record:
        """Write points and record.json, then rename the folder into place and append "done".

        points: (N, >=6) array in the y-up frame (only x y z r g b are kept, as float16).
        meta: the record.json fields other than format_version, key, created and points.
        """
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 6:
            raise StoreError(f"points must be (N, 6+), got {points.shape}")
        files = meta["views"]["files"]
        missing = [name for name in files if not (self.path / name).is_file()]
        if missing:
            raise StoreError(f"record {self.key}: views not written: {', '.join(missing)}")
        np.save(self.path / "points.npy", points[:, :6].astype(np.float16))
        meta = {"format_version": VERSION, "key": self.key, "created": _now(), **meta,
                "points": {"file": "points.npy", "count": len(points), "columns": POINT_COLUMNS,
                           "dtype": "float16", **meta.get("points", {}), "frame": FRAME}}
        meta.setdefault("captions", None)
        _write_json(self.path / "record.json", meta)
        final = self.store.record_path(self.key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # A directory cannot be renamed over a full one, so a redo takes two renames; between
        # them readers find the old record set aside, and it goes only once the new one is in.
        aside = self.store.aside_path(self.key)
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)  # left by a kill after an earlier swap
            os.replace(final, aside)
        os.replace(self.path, final)
        shutil.rmtree(aside, ignore_errors=True)
        self.store.log(self.key, DONE, source=meta["source"]["path"], object=meta["source"]["object"],
                       views=len(files))
        return Record(self.key, final, meta)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class TripletStore:
    """A folder in the format above. `TripletStore(path, create=True)` makes a new one."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False):
        self.root = Path(root).expanduser().resolve()
        header = self.root / "store.json"
        if not header.is_file():
            if not create:
                raise StoreError(f"{self.root} is not a triplet store (no store.json); "
                                 "'ulip2 triplets build PATH --store DIR' creates one")
            if self.root.exists() and any(self.root.iterdir()):
                raise StoreError(f"{self.root} exists and is not empty; choose a new folder for the store")
            (self.root / "records").mkdir(parents=True, exist_ok=True)
            _write_json(header, {"format": FORMAT, "version": VERSION, "created": _now()})
        info = json.loads(header.read_text())
        if info.get("format") != FORMAT:
            raise StoreError(f"{header}: not a ulip2 triplet store (format {info.get('format')!r})")
        if info.get("version") not in READ_VERSIONS:
            raise StoreError(f"{header}: format version {info.get('version')} (this ulip2 reads versions "
                             f"{', '.join(map(str, READ_VERSIONS))}; a newer ulip2 wrote it)")
        self.version = info["version"]
        (self.root / "tmp").mkdir(exist_ok=True)
        self.manifest = self.root / "manifest.jsonl"
        self._tmp_lock: int | None = None  # tmp/ opened and locked by this store's first write
        self._writing = threading.Lock()

    def record_path(self, key: str) -> Path:
        if not _is_key(key):
            raise StoreError(f"record keys are lowercase hex digests, got {key!r}")
        return self.root / "records" / key[:2] / key[2:4] / key

    def aside_path(self, key: str) -> Path:
        """Where a rewrite keeps the old record while it moves the new one in."""
        return self.root / "tmp" / f"{key}.old"

    # -- writing ----------------------------------------------------------------------
    def _begin_writing(self) -> None:
        """Before this store's first write, clear what killed writers left in tmp/.

        A live writer's half-built record looks just like a dead one's, so every writer holds
        tmp/ locked shared from its first write on, and tmp/ is cleared only by one that gets
        the lock to itself. Without flock (Windows) tmp/ is left alone: readers never need it
        cleared. A version-1 store is marked version 2 before its first new record: records
        of both versions are then read right, and an older ulip2 refuses the store rather than
        read the new records in the old frame.
        """
        # Writers in several threads of one process (a build's worker slots) share this store:
        # one of them takes the lock, the others wait for it. Two would open two descriptors,
        # and each would wait for ever to share the lock the other holds alone.
        with self._writing:
            if self.version < VERSION:
                info = json.loads((self.root / "store.json").read_text())
                _write_json(self.root / "store.json", {**info, "version": VERSION})
                self.version = VERSION
            if fcntl is None or self._tmp_lock is not None:
                return
            lock = os.open(self.root / "tmp", os.O_RDONLY)
            weakref.finalize(self, os.close, lock)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another writer has the store open; one alone clears it later
            else:
                self._clear_tmp()
            fcntl.flock(lock, fcntl.LOCK_SH)
            self._tmp_lock = lock

    def _clear_tmp(self) -> None:
        for entry in (self.root / "tmp").iterdir():
            key = entry.name.removesuffix(".old")
            folder = entry.is_dir() and not entry.is_symlink()  # a link is removed, never followed
            if folder and key != entry.name and _is_key(key) and not self.record_path(key).exists():
                os.replace(entry, self.record_path(key))  # a rewrite killed between its renames
            elif folder:
                shutil.rmtree(entry)
            else:
                entry.unlink()

    @contextlib.contextmanager
    def new_record(self, key: str) -> Iterator[RecordWriter]:
        """A RecordWriter whose tmp folder is removed unless it was committed."""
        writer = RecordWriter(self, key)
        try:
            yield writer
        finally:
            writer.discard()  # after commit the folder has moved: nothing left to remove

    def log(self, key: str, event: str, **fields) -> None:
        """Append one manifest line with a single write (under a lock where there is one)."""
        line = json.dumps({"key": key, "event": event, "time": _now(), **fields}) + "\n"
        fd = os.open(self.manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def fail(self, key: str, source: str | None, reason: str) -> None:
        self.log(key, FAILED, source=source, reason=reason)

    def set_captions(self, key: str, captions: dict) -> Record:
        """Store a captions block (see the format) in a record and log "captioned"."""
        self._begin_writing()
        record = self.record(key)
        record.meta["captions"] = captions
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.record.json"
        _write_json(tmp, record.meta)
        os.replace(tmp, record.path / "record.json")
        self.log(key, CAPTIONED, captioner=captions["captioner"], space=captions["space"])
        return record

    # -- reading ----------------------------------------------------------------------
    def events(self) -> Iterator[dict]:
        """Manifest events in order; a torn (half-written) line is skipped."""
        if not self.manifest.is_file():
            return
        with open(self.manifest, encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def state(self) -> dict[str, dict]:
        """key -> its last event, with source, object and views carried over from earlier ones."""
        states: dict[str, dict] = {}
        for event in self.events():
            previous = states.get(event["key"], {})
            carried = {name: previous[name] for name in ("source", "object", "views") if name in previous}
            states[event["key"]] = {**carried, **event}
        return states

    def record(self, key: str) -> Record:
        path = self.record_path(key)
        # Mid-rewrite the old record is set aside; the place is tried again in case the
        # rewrite finished meanwhile (and removed the old one).
        for folder in (path, self.aside_path(key), path):
            try:
                return Record(key, folder, json.loads((folder / "record.json").read_text()))
            except FileNotFoundError:
                continue
        raise StoreError(f"no record {key} in {self.root}")

    def records(self, *, captioned: bool | None = None) -> Iterator[Record]:
        """Stream the stored records in manifest order (for training: one at a time, lazily).

        captioned=True: only captioned ones; False: only those still waiting for captions
        (as their record.json says; see Atomicity).
        """
        for key, event in self.state().items():
            if event["event"] in (DONE, CAPTIONED):
                record = self.record(key)
                if captioned is None or captioned == (record.captions is not None):
                    yield record

    def info(self) -> dict:
        """Counts for `ulip2 triplets info`."""
        states = self.state()
        counts = Counter(event["event"] for event in states.values())
        stored = [e for e in states.values() if e["event"] in (DONE, CAPTIONED)]
        failed = [{"key": k, "source": e.get("source"), "reason": e.get("reason")}
                  for k, e in states.items() if e["event"] == FAILED]
        return {
            "store": str(self.root), "format": FORMAT, "version": self.version,
            "records": len(stored),
            "views": sum(e.get("views", 0) for e in stored),
            "captioned": counts[CAPTIONED],
            "uncaptioned": counts[DONE],
            "failed": len(failed),
            "failures": failed,
        }


def _is_key(key: str) -> bool:
    return len(key) >= 4 and all(c in "0123456789abcdef" for c in key)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _write_json(path: Path, obj) -> None:
    """Write JSON to a sibling temporary file, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
