"""The index database, a facade over one connection: every SQL string lives in one of its seams — schema.py
(migrations, meta, the model an index belongs to), catalog.py (files, items, FTS, trash), vectors.py (vec0,
float16 copies, the prefilter's build and search), prefilter.py (the prefilter's tables), queue.py (the daemon's
queue and roots) and maintenance.py. No seam touches another's tables. SQLite through apsw (this Python's sqlite3
cannot load extensions) with sqlite-vec for vectors and FTS5 for the lexical side of hybrid search.

Layout: ``files`` (one row per path, with its state or skip reason), ``items`` (chunks: passages, images,
pages), ``items_fts`` (FTS5 over title + text) and ``item_vectors`` (vec0, cosine). The vector table is made
when the first model writes, because its width is the model's hidden size; ``meta`` records which model, and a
different model is refused rather than mixing two embedding spaces.

Beside the index itself: ``queue`` (the daemon's persistent work list: a path is dequeued in the same transaction
that stores its result, so a killed daemon loses nothing), ``roots`` (watched folders, online or not), ``trash``
(vectors of removed files, kept a while so a moved or renamed file is recognised by its content hash and not
embedded again), ``item_half`` (a float16 copy of each vector in a plain table, fast to read in bulk or by id)
and, once the index is large, the prefilter (engine/ann.py computes it, prefilter.py files it): ``bit_cells``
(k-means centroids), ``bit_blocks`` (sign bits, each vector filed in two cells, a cell's entries in blocks read
whole, so a query reads only the cells nearest to it) and ``bit_members`` (an item's blocks); its
Hamming candidates are rescored exactly with ``item_half``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw

from freeret_tui.engine.store.catalog import Catalog, FileRow, StoredItem
from freeret_tui.engine.store.maintenance import Maintenance
from freeret_tui.engine.store.prefilter import PrefilterState
from freeret_tui.engine.store.queue import Queue
from freeret_tui.engine.store.schema import INDEX_FILE, SCHEMA_VERSION, Schema, _connect, damaged
from freeret_tui.engine.store.vectors import PREFILTER_MIN, PREFILTER_PER_HIT, PREFILTER_POOL, Vectors

__all__ = ["INDEX_FILE", "PREFILTER_MIN", "PREFILTER_PER_HIT", "PREFILTER_POOL", "SCHEMA_VERSION", "FileRow",
           "Store", "StoredItem"]


class Store(Schema, Catalog, Vectors, Queue, Maintenance):
    """One index database. Every write is one transaction, rolled back whole on any error (tx.py)."""

    @classmethod
    def in_dir(cls, directory: Path) -> Store:
        """The index of a data dir (every process that reads or writes it opens this file)."""
        return cls(directory / INDEX_FILE)

    def __init__(self, path: Path | str = ":memory:"):
        self.path = str(path)
        self._db = _connect(self.path)
        self._file_id = self._on_disk()
        self._prefilter: PrefilterState | None = None
        try:
            self._migrate()
            self._dim = self._meta("dim")
            self._sync_prefilter()
        except (apsw.CorruptError, apsw.NotADBError) as err:
            self._db.close()
            raise damaged(self.path, err) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``with store.transaction():`` groups writes into one atomic commit (inner writes become savepoints);
        rolled back whole if anything inside raises."""
        with self._write():
            yield

    def reset(self) -> None:
        """Forget every file, item and vector (re-index with another model)."""
        with self._write():
            self._clear_catalog()
            self._clear_vectors()
            self._db.execute("DELETE FROM meta")
        self._dim = None
        self._prefilter = None

    def data_version(self) -> int:
        """Changes when another connection commits (readers poll this to refresh, e.g. the TUI's counts)."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _on_disk(self) -> tuple[int, int] | None:
        """(device, inode) of the database file now; None when it is gone (or in memory)."""
        if self.path == ":memory:":
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def still_on_disk(self) -> bool:
        """False once the file this connection writes to was deleted or replaced: writes then go nowhere anyone
        reads (SQLite keeps writing to the unlinked inode)."""
        return self.path == ":memory:" or self._on_disk() == self._file_id

    def close(self) -> None:
        self._db.close()
