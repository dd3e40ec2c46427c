"""The server's connections to its library: reads in parallel, writes through one writer.

A Library holds one sqlite3 connection, usable only in the thread that opened it. So reads
run in a fixed pool of reader threads, each with its own read-only Library (WAL: they read
while an index run or the writer writes) and its own Searcher, made again when the bundle's
embeddings change; and writes run in one writer thread, on the server's one writable Library,
so they queue in the order they came. Opening a Library checks the file (quick_check), which
is why connections live as long as their threads rather than one request.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from core.bundle import Bundle, check_encoder_files
from core.library.keys import bundle_id
from core.library.search import SearchData, Searcher
from core.library.store import Library
from core.runtime import PointEncoder

T = TypeVar("T")
DEFAULT_READERS = min(4, os.cpu_count() or 1)


class Reader:
    """One reader thread's read-only Library, and its Searcher over the bundle's embeddings."""

    def __init__(self, db_path: Path, bundle: Bundle, bundle_key: str, encoder: Callable[[], PointEncoder],
                 data: SearchData):
        self.library = Library(db_path, read_only=True)
        self.bundle = bundle
        self.bundle_id = bundle_key
        self._encoder = encoder
        self._data = data
        self._searcher: Searcher | None = None
        self._generation: int | None = None

    @property
    def encoder(self) -> PointEncoder:
        """The server's one point encoder (made on the first mesh upload, shared by the readers:
        an ONNX Runtime session runs from several threads)."""
        return self._encoder()

    @property
    def searcher(self) -> Searcher:
        """A Searcher that has seen the bundle's latest embeddings: it keeps them in memory,
        so it is made again once an index run changed them (the generation counter says)."""
        generation = self.library.generation(self.bundle_id)
        if self._searcher is None or generation != self._generation:
            self._searcher = Searcher(self.library, self.bundle, data=self._data)
            self._generation = generation
        return self._searcher


class Connections:
    """Readers and the writer of one library file, for one server."""

    def __init__(self, db_path: str | os.PathLike, bundle: Bundle, *, readers: int = DEFAULT_READERS):
        self.db_path = Path(db_path)
        self.bundle = bundle
        self.bundle_id = bundle_id(bundle)
        self._count = max(1, readers)
        self._readers = ThreadPoolExecutor(self._count, thread_name_prefix="ulip2-serve-reader")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ulip2-serve-writer")
        self._local = threading.local()
        self._writable: Library | None = None  # opened by the writer thread on the first write
        self._point_encoder: PointEncoder | None = None
        self._search_data = SearchData()  # the readers' one copy of the vectors and the ANN index
        self._encoder_lock = threading.Lock()

    def _encoder(self) -> PointEncoder:
        with self._encoder_lock:
            if self._point_encoder is None:
                check_encoder_files(self.bundle)
                self._point_encoder = PointEncoder(self.bundle)  # CUDA when ONNX Runtime has it
            return self._point_encoder

    async def read(self, work: Callable[..., T], *args) -> T:
        """work(reader, *args) in a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, work, args)

    async def write(self, work: Callable[..., T], *args) -> T:
        """work(library, *args) in the writer thread, on the server's one writable Library."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._write, work, args)

    def _read(self, work, args):
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = Reader(self.db_path, self.bundle, self.bundle_id, self._encoder,
                                                 self._search_data)
        return work(reader, *args)

    def _write(self, work, args):
        if self._writable is None:
            # create=False: the server writes into a library that exists, never makes one.
            self._writable = Library(self.db_path, create=False)
        return work(self._writable, *args)

    def close(self) -> None:
        """Close every connection in the thread that opened it, once running requests are done."""
        # One task per reader thread: each waits at the barrier until all threads hold one,
        # so every thread (and so every reader's connection) gets exactly one.
        barrier = threading.Barrier(self._count)
        for done in [self._readers.submit(self._close_reader, barrier) for _ in range(self._count)]:
            done.result()
        self._readers.shutdown(wait=True)
        self._writer.submit(self._close_writer).result()
        self._writer.shutdown(wait=True)

    def _close_reader(self, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=60)
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            reader.library.close()
            del self._local.reader

    def _close_writer(self) -> None:
        if self._writable is not None:
            self._writable.close()
            self._writable = None
