"""On-disk cache of text embeddings, keyed by (space, text).

One SQLite file in the cache folder. WAL mode plus a busy timeout lets several
processes (CLI runs, the GUI, training workers) read and write it at once; each call
opens its own connection, so one cache object is safe to share between threads.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path

import numpy as np

from core.paths import cache_dir

_FILE_NAME = "text_embeddings.sqlite"
_TIMEOUT_S = 30.0
# Well under SQLite's host-parameter limit (999 in old builds).
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS text_embeddings (
    space TEXT NOT NULL,
    text TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (space, text)
) WITHOUT ROWID
"""


class TextCache:
    """Text embeddings stored as float32 blobs under (space, text)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else cache_dir() / _FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            # WAL is a property of the file: set once, every later connection uses it.
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=_TIMEOUT_S)

    def get_many(self, space: str, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `texts`, as {text: float32 vector}; misses are absent."""
        wanted = list(dict.fromkeys(texts))
        found: dict[str, np.ndarray] = {}
        with closing(self._connect()) as conn:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT text, dim, vec FROM text_embeddings WHERE space = ? AND text IN ({marks})",
                    [space, *chunk],
                )
                for text, dim, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.size == dim:  # a truncated row is treated as a miss and rewritten
                        found[text] = vec.copy()
        return found

    def put_many(self, space: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Store {text: vector} for `space` in one transaction, replacing older entries."""
        rows = []
        for text, vec in vectors.items():
            arr = np.ascontiguousarray(vec, dtype=np.float32).reshape(-1)
            rows.append((space, text, arr.size, arr.tobytes()))
        with closing(self._connect()) as conn, conn:
            conn.executemany(
                "INSERT OR REPLACE INTO text_embeddings (space, text, dim, vec) VALUES (?, ?, ?, ?)", rows
            )
