"""The asset library's SQLite store: assets, embeddings, tags, captions, thumbnails, errors.

One file (`ulip2-library.sqlite` by default). WAL journal, so searches read while an
index run writes; synchronous=FULL and one transaction per batch, so a kill -9 (or a
power cut) loses at most the batch in flight and never leaves half of one behind.

Embeddings are keyed by (asset, bundle id): the vectors of another bundle or space stay
in the file but are never returned next to the current bundle's, and tags and captions
carry the bundle that scored them for the same reason. A person's own tags (user_tags)
belong to the asset alone: they stay whatever bundle is current, and across edits of the file.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.formats import BLENDER_FORMATS
from core.errors import Ulip2Error

SCHEMA_VERSION = 5
DB_ENV = "ULIP2_DB"
DEFAULT_DB_NAME = "ulip2-library.sqlite"
QUICK_CHECK_BYTES = 256 << 20  # quick_check read a 332 MB file in 0.28 s here (page cache warm)
_TIMEOUT_S = 60.0
_CHUNK = 500  # rows per IN (...) query, under SQLite's host-parameter limit
#: What made a thumbnail (thumbnails.source): core's software preview of the sampled points,
#: or a render by the Blender worker (`ulip2 thumbnails` replaces the first by the second).
POINTS, BLENDER = "points", "blender"
#: Whose fault a failure was (errors.fault): the file's own (unreadable, corrupt, no usable
#: geometry), skipped until the file changes or `index --retry-failed`; or the run's (out of
#: memory, a worker killed by the system, a full disk, a missing extra, a loader bug), retried
#: by the next run.
FILE_FAULT, RUN_FAULT = "file", "run"

# One row per asset: a file, or an object marked as an asset inside a .blend (several rows
# share the file's path then, told apart by `object`). Written once, used by the schema and
# by the migration that rebuilds the table.
_ASSETS_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,             -- absolute path of the file
    object TEXT NOT NULL DEFAULT '',  -- the marked object's name in a .blend, '' for a whole file
    folder TEXT NOT NULL,           -- its parent folder, for --folder filters
    format TEXT NOT NULL,           -- extension without the dot, lower case
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,           -- of the file
    indexed_at REAL NOT NULL,
    UNIQUE (path, object)
);"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    bundle TEXT NOT NULL,           -- bundle id (see core.library.indexer.bundle_id)
    space TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,              -- float32, unit norm
    PRIMARY KEY (asset_id, bundle)
);
CREATE INDEX IF NOT EXISTS embeddings_bundle ON embeddings(bundle);
CREATE TABLE IF NOT EXISTS tags (
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    vocab TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    bundle TEXT NOT NULL,
    PRIMARY KEY (asset_id, vocab, label)
);
CREATE INDEX IF NOT EXISTS tags_label ON tags(label);
CREATE TABLE IF NOT EXISTS user_tags (
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    PRIMARY KEY (asset_id, label)
);
CREATE INDEX IF NOT EXISTS user_tags_label ON user_tags(label);
CREATE TABLE IF NOT EXISTS captions (
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    bank TEXT NOT NULL,
    rank INTEGER NOT NULL,
    caption TEXT NOT NULL,
    score REAL NOT NULL,
    bundle TEXT NOT NULL,
    PRIMARY KEY (asset_id, bank, rank)
);
CREATE TABLE IF NOT EXISTS thumbnails (
    asset_id INTEGER PRIMARY KEY REFERENCES assets(id) ON DELETE CASCADE,
    png BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT 'points'  -- 'points' (software preview) or 'blender' (a render)
);
CREATE TABLE IF NOT EXISTS errors (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    fault TEXT NOT NULL DEFAULT 'file'  -- 'file' or 'run' (see FILE_FAULT)
);
""" + _ASSETS_TABLE.format(name="assets")


def _add_column(conn: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    # A file older than the table got it from _SCHEMA just now, column and all.
    if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _add_thumbnail_source(conn: sqlite3.Connection) -> None:
    _add_column(conn, "thumbnails", "source", f"TEXT NOT NULL DEFAULT '{POINTS}'")
    formats = [extension.lstrip(".") for extension in BLENDER_FORMATS]
    conn.execute(f"UPDATE thumbnails SET source = ? WHERE asset_id IN "
                 f"(SELECT id FROM assets WHERE format IN ({','.join('?' * len(formats))}))", (BLENDER, *formats))


#: What brings a file of schema version N - 1 to N, run in one transaction: statements, or
#: a function of the connection for a step that must look at the file first.
_MIGRATIONS = {
    # Version 1 kept a person's tags in `tags` under the vocabulary "user", stamped with the
    # bundle current when they were typed, so another bundle hid them: they move to user_tags.
    2: ("INSERT OR IGNORE INTO user_tags (asset_id, label) SELECT asset_id, label FROM tags WHERE vocab = 'user'",
        "DELETE FROM tags WHERE vocab = 'user'"),
    # Version 2 had one asset per path; objects marked as assets in a .blend are assets of
    # their own, so `assets` gains `object` and is unique per (path, object). SQLite cannot
    # change a UNIQUE constraint in place: the table is rebuilt with its ids (every other
    # table refers to them) and existing rows become whole-file assets (object '').
    3: (_ASSETS_TABLE.format(name="assets_v3"),
        "INSERT INTO assets_v3 (id, path, object, folder, format, size, mtime_ns, sha256, indexed_at) "
        "SELECT id, path, '', folder, format, size, mtime_ns, sha256, indexed_at FROM assets",
        "DROP TABLE assets",
        "ALTER TABLE assets_v3 RENAME TO assets"),
    # Version 3 did not say what made a thumbnail: the files only Blender reads were always
    # rendered by it, every other file got the point preview.
    4: _add_thumbnail_source,
    # Version 4 blamed every failure on the file: they stay file faults (skipped until the
    # file changes or `index --retry-failed`), as they were treated when recorded.
    5: lambda conn: _add_column(conn, "errors", "fault", f"TEXT NOT NULL DEFAULT '{FILE_FAULT}'"),
}



class LibraryError(Ulip2Error):
    """A library file that cannot be opened or does not fit the request."""


def default_db_path() -> Path:
    """`$ULIP2_DB`, else ulip2-library.sqlite in the current folder."""
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB_NAME).expanduser()


@dataclass(frozen=True)
class Known:
    """What the store remembers of one path, to decide whether it needs work."""

    asset_id: int | None  # (the first asset's, for a .blend of several)
    size: int
    mtime_ns: int
    sha256: str | None  # None for a file remembered as an error
    embedded: bool  # every asset of the file has an embedding from the current bundle
    fault: str | None = None  # FILE_FAULT or RUN_FAULT, for a file remembered as an error


@dataclass
class AssetRecord:
    """One asset ready to be written: file facts, embedding, thumbnail. A file's assets
    (several for a .blend with marked assets) are written in one batch."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    vec: np.ndarray
    thumbnail: bytes | None
    object: str = ""  # the marked object's name in a .blend; "" for a whole file
    thumbnail_source: str = POINTS  # what made `thumbnail`: POINTS or BLENDER


class Library:
    """A connection to one library file; cheap to open, use as a context manager.

    read_only: for commands that only read (search, report): the file must exist, and nothing
    is written or locked, so a library on a read-only share can be searched. Otherwise the
    library's folder must be writable (SQLite keeps its -wal and -shm files beside it).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = True, read_only: bool = False):
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        if (read_only or not create) and not self.path.is_file():
            raise LibraryError(f"no library at {self.path}; make one with: ulip2 index FOLDER --db {self.path}")
        if read_only:
            self._open_read_only()
            return
        unwritable = self._unwritable()
        if unwritable is not None:
            # An OSError, as a full disk is: the command is right, the place cannot take it.
            raise PermissionError(errno.EACCES, f"not writable, and this command writes the library {self.path.name}",
                                  str(unwritable))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            self._refuse_other_files()
        try:
            self.conn = sqlite3.connect(self.path, timeout=_TIMEOUT_S, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self._check_pages()
            # FULL: a committed batch survives power loss too, not only a killed process.
            self.conn.execute("PRAGMA synchronous=FULL")
            # Foreign keys go on after migrating: a migration that rebuilds a table drops the
            # old one, which with them on would cascade-delete every row that refers to it.
            self._migrate()
            self.conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"{self.path}: not a ulip2 library or corrupt ({exc})") from exc

    def _check_pages(self) -> None:
        """SQLite's quick_check where it is cheap (a library under QUICK_CHECK_BYTES: well
        under a second): a damaged file is found at open, not as a traceback mid-search while
        `index` goes on writing into it."""
        if self.path.stat().st_size > QUICK_CHECK_BYTES:
            return
        problems = [row[0] for row in self.conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise LibraryError(f"{self.path}: the library file is damaged ({'; '.join(problems)[:200]}); restore it "
                               "from a backup, or index the folders again into a new file with --db NEW")

    def _unwritable(self) -> Path | None:
        """The library's folder, or the file, where this process may not write (None: neither)."""
        for where in (self.path.parent, self.path):
            if where.exists() and not os.access(where, os.W_OK):
                return where
        return None

    def _read_only_connection(self) -> sqlite3.Connection:
        """A connection that cannot write. mode=ro reads a WAL library even while an index run
        writes it, through the -shm file beside it, made on first use. In a folder where it
        cannot be made (a read-only share) the file is opened immutable instead: sound there,
        as nothing can change it, unless a -wal file holds changes the library file lacks."""
        uri = self.path.resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master")
            return conn
        except sqlite3.OperationalError:
            conn.close()
            if os.access(self.path.parent, os.W_OK):
                raise
        wal = Path(f"{self.path}-wal")
        if wal.is_file() and wal.stat().st_size:
            raise LibraryError(f"{wal}: holds changes not yet in the library, which cannot be read from a folder that "
                               f"is not writable; where it is writable, fold them in: sqlite3 {self.path} "
                               "'PRAGMA wal_checkpoint(TRUNCATE)'")
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def _open_read_only(self) -> None:
        try:
            self.conn = self._read_only_connection()
            version = self._schema_version(self.conn)
            if version != SCHEMA_VERSION:
                # An older library (or an empty database) is brought up to date first, which
                # writes it: where that cannot be done, say so.
                self.conn.close()
                unwritable = self._unwritable()
                if unwritable is not None:
                    raise LibraryError(f"{self.path}: the library is of schema {version or 'none'}, this ulip2 reads "
                                       f"{SCHEMA_VERSION}, and upgrading it writes it, but {unwritable} is not "
                                       "writable: open it once with this ulip2 where it is")
                Library(self.path).close()
                self.conn = self._read_only_connection()
            self._check_pages()
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"{self.path}: not a ulip2 library or corrupt ({exc})") from exc

    def _refuse_other_files(self) -> None:
        """Before anything is written: an existing file must be a ulip2 library (or an empty
        database). Another program's SQLite file is refused and left byte for byte as it was."""
        try:
            conn = self._read_only_connection()
            try:
                self._schema_version(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"{self.path}: not a ulip2 library or corrupt ({exc}); "
                               "point --db at a ulip2 library or a new file") from exc

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        """The file's schema version, None for an empty database; another program's database,
        a version ulip2 never wrote or one newer than this ulip2 is refused."""
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables else None
        if tables and row is None:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise LibraryError(f"{self.path}: a SQLite database of another program (tables {shown}), not a ulip2 "
                               "library; it was left as it is: point --db at a new file")
        if row is None:
            return None
        if not str(row[0]).isdigit():
            raise LibraryError(f"{self.path}: library schema {row[0]!r} is not one ulip2 wrote; "
                               "point --db at a ulip2 library or a new file")
        if int(row[0]) > SCHEMA_VERSION:
            raise LibraryError(
                f"{self.path}: library schema {row[0]} is newer than this ulip2 reads ({SCHEMA_VERSION}); upgrade ulip2"
            )
        return int(row[0])

    def _migrate(self) -> None:
        with self.transaction():
            # Statement by statement: executescript would COMMIT the open transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = SCHEMA_VERSION if row is None else int(row[0])  # (newer ones were refused before)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                migration = _MIGRATIONS[step]
                if callable(migration):
                    migration(self.conn)
                    continue
                for statement in migration:
                    self.conn.execute(statement)
            if version < SCHEMA_VERSION and self.conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise LibraryError(f"{self.path}: migrating to schema {SCHEMA_VERSION} broke row references")
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: the writer lock up front, so two index runs queue
        instead of failing half-way; any exception rolls the whole batch back."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta ----------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def generation(self, bundle: str) -> int:
        """Counter bumped by every change to `bundle`'s embeddings (the ANN index follows it)."""
        return int(self.get_meta(f"generation:{bundle}", "0"))

    def _bump(self, bundle: str) -> None:
        self.set_meta(f"generation:{bundle}", str(self.generation(bundle) + 1))

    # -- indexing ------------------------------------------------------------------
    def known(self, paths: Sequence[str], bundle: str) -> dict[str, Known]:
        """What the store holds for each of `paths` (absent paths are new)."""
        found: dict[str, Known] = {}
        for start in range(0, len(paths), _CHUNK):
            chunk = list(paths[start:start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            for path, asset_id, size, mtime, sha, embedded in self.conn.execute(
                f"SELECT a.path, a.id, a.size, a.mtime_ns, a.sha256, e.asset_id IS NOT NULL FROM assets a "
                f"LEFT JOIN embeddings e ON e.asset_id = a.id AND e.bundle = ? WHERE a.path IN ({marks})",
                [bundle, *chunk],
            ):
                earlier = found.get(path)
                found[path] = Known(asset_id, size, mtime, sha, bool(embedded)) if earlier is None else \
                    Known(earlier.asset_id, size, mtime, sha, earlier.embedded and bool(embedded))
            for path, size, mtime, fault in self.conn.execute(
                f"SELECT path, size, mtime_ns, fault FROM errors WHERE path IN ({marks})", chunk
            ):
                found.setdefault(path, Known(None, size, mtime, None, False, fault))
        return found

    def write_batch(self, bundle: str, space: str, records: Iterable[AssetRecord],
                    touched: Iterable[tuple[str, int, int]],
                    failed: Iterable[tuple[str, int, int, str, str]]) -> None:
        """One transaction: embedded assets (new content drops every derived row of the old;
        the same content under a new bundle adds that bundle's embedding beside the others),
        files whose content did not change (new size/mtime only), and files that failed,
        (path, size, mtime, reason, fault): by their own fault their asset, if any, is removed
        (its rows described content that is gone); by the run's it stays, a person's tags with
        it (an out-of-memory says nothing of the file), until the next run reads the file."""
        now = time.time()
        records, touched, failed = list(records), list(touched), list(failed)
        objects: dict[str, list[str]] = {}
        for r in records:
            objects.setdefault(r.path, []).append(r.object)
        with self.transaction() as conn:
            for path, names in objects.items():
                # Assets the file no longer holds (unmarked or renamed in a .blend, or the
                # whole-file asset of a .blend that now has marked ones) go with all their rows.
                conn.execute(f"DELETE FROM assets WHERE path = ? AND object NOT IN ({','.join('?' * len(names))})",
                             (path, *names))
            for r in records:
                path = r.path
                folder, extension = os.path.dirname(path), os.path.splitext(path)[1].lower().lstrip(".")
                before = conn.execute("SELECT id, sha256 FROM assets WHERE path = ? AND object = ?",
                                      (path, r.object)).fetchone()
                if before is not None and before[1] != r.sha256:
                    # New content: every bundle's embedding, tags, captions and thumbnail are stale
                    # (a person's own tags stay: they name the asset, not what a model saw in it).
                    for table in ("embeddings", "tags", "captions", "thumbnails"):
                        conn.execute(f"DELETE FROM {table} WHERE asset_id = ?", (before[0],))
                asset_id = conn.execute(
                    "INSERT INTO assets (path, object, folder, format, size, mtime_ns, sha256, indexed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path, object) DO UPDATE SET "
                    "size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, "
                    "indexed_at = excluded.indexed_at RETURNING id",
                    (path, r.object, folder, extension, r.size, r.mtime_ns, r.sha256, now),
                ).fetchone()[0]
                vec = np.ascontiguousarray(r.vec, dtype=np.float32).reshape(-1)
                conn.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                             (asset_id, bundle, space, vec.size, vec.tobytes()))
                if r.thumbnail is not None:
                    # Same content under another bundle: a render stays (a changed file's
                    # thumbnail was deleted above, so a stale render never does).
                    conn.execute(
                        "INSERT INTO thumbnails VALUES (?, ?, ?) ON CONFLICT(asset_id) DO UPDATE SET "
                        "png = excluded.png, source = excluded.source "
                        f"WHERE NOT (thumbnails.source = '{BLENDER}' AND excluded.source = '{POINTS}')",
                        (asset_id, r.thumbnail, r.thumbnail_source))
                conn.execute("DELETE FROM errors WHERE path = ?", (path,))
            for path, size, mtime in touched:
                conn.execute("UPDATE assets SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime, path))
                conn.execute("DELETE FROM errors WHERE path = ?", (path,))  # read fine this time
            for path, size, mtime, reason, fault in failed:
                if fault == FILE_FAULT:
                    conn.execute("DELETE FROM assets WHERE path = ?", (path,))
                conn.execute("INSERT OR REPLACE INTO errors VALUES (?, ?, ?, ?, ?, ?)",
                             (path, size, mtime, reason, now, fault))
            if records or failed:
                self._bump(bundle)

    def drop_missing(self, roots: Sequence[str], seen: set[str]) -> int:
        """Forget assets and errors under `roots` whose files were not seen this run."""
        gone = []
        for table in ("assets", "errors"):
            for (path,) in self.conn.execute(f"SELECT path FROM {table}"):
                if path not in seen and any(_is_under(path, root) for root in roots):
                    gone.append((table, path))
        if gone:
            with self.transaction() as conn:
                for table, path in gone:
                    conn.execute(f"DELETE FROM {table} WHERE path = ?", (path,))
                # Any bundle may have had rows for these assets.
                for (bundle,) in conn.execute("SELECT DISTINCT bundle FROM embeddings").fetchall():
                    self._bump(bundle)
        return sum(1 for table, _ in gone if table == "assets")

    # -- reading -------------------------------------------------------------------
    def embeddings(self, bundle: str, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(asset ids (n,), unit vectors (n, dim)) of `bundle`, in id order: of every asset it
        embedded, or of those among `ids` (read by id, never the whole table)."""
        query = "SELECT asset_id, dim, vec FROM embeddings WHERE bundle = ?"
        if ids is None:
            rows = self.conn.execute(query + " ORDER BY asset_id", (bundle,)).fetchall()
        else:
            rows = self._by_id(query + " AND asset_id IN ({}) ORDER BY asset_id", [bundle], ids)
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        asset_ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        matrix = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), rows[0][1])
        return asset_ids, matrix

    def _by_id(self, query: str, params: list, ids: Iterable[int]) -> list[tuple]:
        """The rows of `query` (its `IN ({})` filled with asset ids, ordered by asset id) for
        each of `ids` once, in ascending id order: chunks of ids under the connection's
        host-parameter limit, read in one transaction, so an index run committing between
        two chunks is not half seen."""
        wanted = sorted({int(i) for i in ids})
        size = max(1, min(_CHUNK, self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - len(params)))
        rows: list[tuple] = []
        with self._reading():
            for start in range(0, len(wanted), size):
                chunk = wanted[start:start + size]
                rows += self.conn.execute(query.format(",".join("?" * len(chunk))), [*params, *chunk]).fetchall()
        return rows

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction (a snapshot of the file) around several queries; inside a
        transaction already open, that one."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def embedded_ids(self, bundle: str) -> set[int]:
        """Ids of the assets `bundle` embedded (without reading their vectors)."""
        return {r[0] for r in self.conn.execute("SELECT asset_id FROM embeddings WHERE bundle = ?", (bundle,))}

    def spaces(self) -> dict[str, tuple[str, int]]:
        """{bundle id: (space, number of embeddings)} of every bundle in the file."""
        return {b: (s, n) for b, s, n in self.conn.execute(
            "SELECT bundle, space, COUNT(*) FROM embeddings GROUP BY bundle, space")}

    def assets(self, ids: Sequence[int] | None = None) -> dict[int, dict]:
        """{id: {path, object, folder, format, size, sha256}} for `ids` (every asset when None).
        object: the marked object's name for an asset inside a .blend, else ""."""
        cols = "id, path, folder, format, size, sha256, object"
        if ids is None:
            rows = self.conn.execute(f"SELECT {cols} FROM assets ORDER BY path, object").fetchall()
        else:
            rows = self._by_id(f"SELECT {cols} FROM assets WHERE id IN ({{}}) ORDER BY id", [], ids)
        return {r[0]: dict(path=r[1], object=r[6], folder=r[2], format=r[3], size=r[4], sha256=r[5]) for r in rows}

    def filtered_ids(self, *, formats: Sequence[str] = (), folder: str | None = None,
                     tags: Sequence[str] = ()) -> list[int]:
        """Asset ids matching every filter: any of `formats`, under `folder`, carrying every tag
        (a zero-shot tag of any bundle, or a person's own)."""
        where, params = [], []
        if formats:
            where.append(f"format IN ({','.join('?' * len(formats))})")
            params += [f.lower().lstrip(".") for f in formats]
        if folder is not None:
            root = os.path.abspath(folder).rstrip(os.sep)
            where.append("(folder = ? OR substr(folder, 1, ?) = ?)")
            params += [root, len(root) + 1, root + os.sep]
        for tag in tags:
            where.append("id IN (SELECT asset_id FROM tags WHERE label = ? "
                         "UNION SELECT asset_id FROM user_tags WHERE label = ?)")
            params += [tag, tag]
        sql = "SELECT id FROM assets" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self.conn.execute(sql, params)]

    def asset_id(self, path: str, object: str = "") -> int | None:
        """The asset of a whole file, or of the object marked as an asset `object` in it."""
        row = self.conn.execute("SELECT id FROM assets WHERE path = ? AND object = ?", (path, object)).fetchone()
        return None if row is None else row[0]

    def marked_objects(self, path: str) -> list[str]:
        """Names of the marked assets indexed from the .blend at `path` (none for other files)."""
        return [r[0] for r in self.conn.execute(
            "SELECT object FROM assets WHERE path = ? AND object != '' ORDER BY object", (path,))]

    def counts(self) -> dict:
        """{assets, errors, thumbnails, last_indexed_at}, read in one snapshot: the library at
        a glance (the server's /v1/status). last_indexed_at: when an asset was last written by
        an index run, in seconds since the epoch; None for a library without assets."""
        with self._reading():
            assets, last = self.conn.execute("SELECT COUNT(*), MAX(indexed_at) FROM assets").fetchone()
            errors = self.conn.execute("SELECT COUNT(*) FROM errors").fetchone()[0]
            thumbnails = self.conn.execute("SELECT COUNT(*) FROM thumbnails").fetchone()[0]
        return dict(assets=assets, errors=errors, thumbnails=thumbnails, last_indexed_at=last)

    def errors(self) -> list[dict]:
        """[{path, reason, fault}] of the files that failed, in path order."""
        return [dict(path=p, reason=r, fault=f)
                for p, r, f in self.conn.execute("SELECT path, reason, fault FROM errors ORDER BY path")]

    def thumbnail(self, asset_id: int) -> bytes | None:
        row = self.conn.execute("SELECT png FROM thumbnails WHERE asset_id = ?", (asset_id,)).fetchone()
        return None if row is None else row[0]

    def thumbnail_source(self, asset_id: int) -> str | None:
        """What made the asset's thumbnail (POINTS or BLENDER); None when it has none."""
        row = self.conn.execute("SELECT source FROM thumbnails WHERE asset_id = ?", (asset_id,)).fetchone()
        return None if row is None else row[0]

    def unrendered(self, *, redo: bool = False) -> list[dict]:
        """[{id, path, object, format, sha256}] of the assets whose thumbnail is not a Blender
        render (a point preview, or none), in path order; every asset when `redo`."""
        where = "" if redo else f" WHERE t.source IS NULL OR t.source != '{BLENDER}'"
        rows = self.conn.execute("SELECT a.id, a.path, a.object, a.format, a.sha256 FROM assets a "
                                 f"LEFT JOIN thumbnails t ON t.asset_id = a.id{where} ORDER BY a.path, a.object")
        return [dict(id=r[0], path=r[1], object=r[2], format=r[3], sha256=r[4]) for r in rows]

    def set_rendered_thumbnails(self, sha256: str, thumbnails: dict[int, bytes]) -> int:
        """Store Blender renders {asset id: PNG} of one file's assets in one transaction, each
        only if the asset still holds the content `sha256` that was rendered (an index run in
        between may have changed it); how many were stored."""
        with self.transaction() as conn:
            return sum(conn.execute("INSERT OR REPLACE INTO thumbnails SELECT id, ?, ? FROM assets "
                                    "WHERE id = ? AND sha256 = ?", (png, BLENDER, asset_id, sha256)).rowcount
                       for asset_id, png in thumbnails.items())

    # -- tags and captions ---------------------------------------------------------
    def replace_labels(self, table: str, source: str, bundle: str,
                       rows: Iterable[tuple[int, list[tuple[str, float]]]]) -> None:
        """Replace `table` (tags or captions) rows of `source` (a vocabulary or caption bank)
        for the given assets in one transaction; `rows` is (asset id, [(text, score), ...])."""
        key = {"tags": "vocab", "captions": "bank"}[table]
        with self.transaction() as conn:
            for asset_id, labels in rows:
                conn.execute(f"DELETE FROM {table} WHERE asset_id = ? AND {key} = ?", (asset_id, source))
                if table == "tags":
                    conn.executemany("INSERT INTO tags VALUES (?, ?, ?, ?, ?)",
                                     [(asset_id, source, text, score, bundle) for text, score in labels])
                else:
                    conn.executemany("INSERT INTO captions VALUES (?, ?, ?, ?, ?, ?)",
                                     [(asset_id, source, rank, text, score, bundle)
                                      for rank, (text, score) in enumerate(labels)])

    def labels(self, table: str, bundle: str, source: str | None = None,
               ids: Iterable[int] | None = None) -> dict[int, list[tuple[str, float]]]:
        """{asset id: [(text, score), ...] best first} of `table` (tags or captions) made with
        `bundle`: of one vocabulary or bank (`source`), of the assets `ids` only (read by id)."""
        key, order = {"tags": ("vocab", "score DESC"), "captions": ("bank", "rank")}[table]
        text = "label" if table == "tags" else "caption"
        sql = f"SELECT asset_id, {text}, score FROM {table} WHERE bundle = ?"
        params: list = [bundle]
        if source is not None:
            sql += f" AND {key} = ?"
            params.append(source)
        if ids is None:
            rows = self.conn.execute(sql + f" ORDER BY asset_id, {order}", params)
        else:
            rows = self._by_id(sql + f" AND asset_id IN ({{}}) ORDER BY asset_id, {order}", params, ids)
        out: dict[int, list[tuple[str, float]]] = {}
        for asset_id, label, score in rows:
            out.setdefault(asset_id, []).append((label, score))
        return out

    def user_tags(self, ids: Sequence[int] | None = None) -> dict[int, list[str]]:
        """{asset id: [label, ...] sorted}: a person's own tags of `ids` (every asset when None)."""
        sql = "SELECT asset_id, label FROM user_tags"
        if ids is None:
            rows = self.conn.execute(sql).fetchall()
        else:
            rows = self._by_id(sql + " WHERE asset_id IN ({}) ORDER BY asset_id", [], ids)
        out: dict[int, list[str]] = {}
        for asset_id, label in sorted(rows):
            out.setdefault(asset_id, []).append(label)
        return out

    def set_user_tags(self, asset_id: int, labels: Iterable[str]) -> list[str]:
        """Replace a person's tags of one asset; returns them as stored: stripped, empty ones
        dropped, each once, sorted (a person's word has no score to order by)."""
        cleaned = sorted({label.strip() for label in labels if label.strip()})
        with self.transaction() as conn:
            conn.execute("DELETE FROM user_tags WHERE asset_id = ?", (asset_id,))
            conn.executemany("INSERT INTO user_tags VALUES (?, ?)", [(asset_id, label) for label in cleaned])
        return cleaned

    def asset_tags(self, bundle: str, vocab: str | None = None) -> dict[int, list[tuple[str, float]]]:
        """{asset id: [(label, score), ...]}: what each asset is tagged with, a person's tags
        first (score 1.0: certain), then `bundle`'s zero-shot tags (of `vocab` only, when
        named) not among them, best first."""
        merged = {i: dict.fromkeys(labels, 1.0) for i, labels in self.user_tags().items()}
        for asset_id, labels in self.labels("tags", bundle, vocab).items():
            tags = merged.setdefault(asset_id, {})
            for label, score in labels:
                tags.setdefault(label, score)  # a label in several vocabularies: its best score
        return {i: list(tags.items()) for i, tags in merged.items()}

    def tag_labels(self, bundle: str) -> list[str]:
        """Every label a tag filter can find with `bundle` current: a person's tags and the
        bundle's zero-shot tags, sorted."""
        return [r[0] for r in self.conn.execute(
            "SELECT label FROM user_tags UNION SELECT label FROM tags WHERE bundle = ? ORDER BY label", (bundle,))]

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
