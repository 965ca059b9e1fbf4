"""The index database: owns every SQL string. SQLite through apsw (this Python's sqlite3 cannot load
extensions) with sqlite-vec for vectors and FTS5 for the lexical side of hybrid search.

Layout: ``files`` (one row per path, with its state or skip reason), ``items`` (chunks: passages, images,
pages), ``items_fts`` (FTS5 over title + text) and ``item_vectors`` (vec0, cosine). The vector table is made
when the first model writes, because its width is the model's hidden size; ``meta`` records which model, and a
different model is refused rather than mixing two embedding spaces.

Beside the index itself: ``queue`` (the daemon's persistent work list: a path is dequeued in the same transaction
that stores its result, so a killed daemon loses nothing), ``roots`` (watched folders, online or not), ``trash``
(vectors of removed files, kept a while so a moved or renamed file is recognised by its content hash and not
embedded again), ``item_half`` (a float16 copy of each vector in a plain table, fast to read in bulk or by id)
and, once the index is large, the prefilter (engine/ann.py computes it): ``bit_cells`` (k-means centroids) and
``item_bits`` (vec0 of sign bits partitioned by cell, each vector filed in its two nearest cells, so a query
reads only the cells nearest to it), whose Hamming candidates are rescored exactly with ``item_half``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from freeret_tui.engine import ann
from freeret_tui.engine.types import Chunk, Kind
from freeret_tui.errors import StoreError

# Numbered migrations: index i brings the schema from version i to i + 1. Never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            root TEXT NOT NULL,
            kind TEXT,
            size INTEGER NOT NULL,
            mtime REAL NOT NULL,
            sha256 TEXT,
            status TEXT NOT NULL,            -- 'indexed' | 'skipped'
            error TEXT,                      -- the skip reason, shown to the person
            indexed_at REAL NOT NULL)""",
        """CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            title TEXT NOT NULL,
            text TEXT NOT NULL,
            page INTEGER,
            line_start INTEGER,
            line_end INTEGER,
            chunk_no INTEGER NOT NULL)""",
        "CREATE INDEX items_file ON items(file_id)",
        "CREATE VIRTUAL TABLE items_fts USING fts5(title, text, tokenize='porter unicode61')",
    ),
    (
        # status gains 'failed' (a broken file) beside 'skipped' (a file this model cannot index).
        "CREATE INDEX files_sha ON files(sha256)",
        "CREATE INDEX files_root ON files(root)",
        "CREATE TABLE queue (path TEXT PRIMARY KEY, root TEXT NOT NULL, due REAL NOT NULL)",
        "CREATE INDEX queue_due ON queue(due)",
        "CREATE TABLE roots (path TEXT PRIMARY KEY, online INTEGER NOT NULL DEFAULT 1, scanned_at REAL)",
        """CREATE TABLE trash (
            sha256 TEXT NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            page INTEGER,
            line_start INTEGER,
            line_end INTEGER,
            chunk_no INTEGER NOT NULL,
            embedding BLOB NOT NULL,
            removed_at REAL NOT NULL)""",
        "CREATE INDEX trash_sha ON trash(sha256)",
    ),
    (
        # A float16 copy of every vector in a plain table: the prefilter rescores its candidates with it, and
        # builds read it (a full scan of vec0's float table costs 0.29 ms a row: 290 s at 1M). Filled for
        # vectors written before this migration by the next prefilter build.
        "CREATE TABLE item_half (item_id INTEGER PRIMARY KEY, vector BLOB NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_TOKEN = re.compile(r"\w+", re.UNICODE)
# FTS5 caps query complexity; 64 terms keeps a pasted paragraph usable as a query.
_MAX_QUERY_TERMS = 64


# Below this many vectors exact search is fast enough; above it the prefilter answers. Measured at 1536-d on
# 2 cores (benchmarks/stage1_latency.py): exact 23.5 ms at 10k and 243 ms at 100k.
PREFILTER_MIN = 20_000
INDEX_FILE = "index.db"
# Hamming candidates rescored exactly: at least PREFILTER_POOL, and PREFILTER_PER_HIT per wanted hit. 200 for
# the top-10 gave recall@10 0.96-0.99 against exact from 1k to 1M (benchmarks/stage1_latency.py; 500 gave 0.997
# at 2.6x the time). Search asks for 50 dense candidates to fuse with the lexical ones; 20 per hit would mean
# 1000 float16 rows and a sqlite-vec top-1000 in every cell.
PREFILTER_POOL = 200
PREFILTER_PER_HIT = 4
# The cells are re-trained when the index has grown this many times over since they were: cells of a fixed count
# grow with the index, and each query's scan with them.
_REBUILD_GROWTH = 2
_BUILD_BATCH = 4096  # vectors read, quantised and written per step of a prefilter build
# What an index's prefilter tables look like; one built another way is rebuilt by the next ensure_prefilter.
_LAYOUT = "cells-v2"


@dataclass(frozen=True)
class _Prefilter:
    """The prefilter as built: its version (a reader re-reads it when another process rebuilt it), the centre of
    the sign bits and the cell centroids."""

    version: str
    centre: np.ndarray
    centroids: np.ndarray
    assignments: int  # entries per vector in item_bits: entry = item id x assignments + slot


@dataclass(frozen=True)
class StoredItem:
    item_id: int
    chunk: Chunk
    mtime: float | None = None  # the file's, when it was indexed


@dataclass(frozen=True)
class FileRow:
    size: int
    mtime: float
    sha256: str | None
    status: str


def _connect(path: str):  # -> apsw.Connection
    import apsw
    import sqlite_vec

    try:
        conn = apsw.Connection(path)
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        conn.enable_load_extension(False)
    except apsw.Error as err:
        raise StoreError(f"cannot open index database {path}: {err}") from None
    conn.set_busy_timeout(5000)
    conn.execute("PRAGMA foreign_keys = ON")
    # vec0 keeps vectors in blobs of 1024 (6 MB at 1536-d) spread over overflow pages that a write or a point
    # read walks from the start; 64 KiB pages make that walk 16x shorter (10k inserts: 5.1 s -> 1.7 s, exact
    # search 34 -> 25 ms). Only takes effect on a new database (before the first table and WAL).
    conn.execute("PRAGMA page_size = 65536")
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")  # one writer, many readers
    return conn


class Store:
    """One index database. Every write is one transaction, rolled back whole on any error."""

    @classmethod
    def in_dir(cls, directory: Path) -> Store:
        """The index of a data dir (every process that reads or writes it opens this file)."""
        return cls(directory / INDEX_FILE)

    def __init__(self, path: Path | str = ":memory:"):
        self.path = str(path)
        self._db = _connect(self.path)
        self._migrate()
        self._dim = self._meta("dim")
        self._prefilter: _Prefilter | None = None
        self._sync_prefilter()

    # -- schema ---------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer freeret-tui (schema {version} > {SCHEMA_VERSION}); upgrade"
            )
        if version == SCHEMA_VERSION:
            return
        # Two processes may open a new index at once (the TUI and the daemon): the write lock is taken first and
        # the version read again under it, so only one of them migrates.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def get_meta(self, key: str) -> str | None:
        return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._db:
            self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                             (key, value, value))

    def transaction(self):  # -> apsw.Connection as a context manager
        """``with store.transaction():`` groups writes into one atomic commit (inner writes become savepoints)."""
        return self._db

    def bind_model(self, name: str, dim: int, image_max_pixels: int | None = None) -> None:
        """Tie this index to a model and the pixels it reads images at (None: a text-only model); refuse another
        model's vectors, or another image budget's (re-index instead)."""
        stored_name, stored_dim = self._meta("model"), self._meta("dim")
        if stored_name is None:
            with self._db:
                self._db.execute("INSERT INTO meta(key, value) VALUES ('model', ?), ('dim', ?)", (name, str(dim)))
                self._db.execute(
                    f"CREATE VIRTUAL TABLE item_vectors USING vec0("
                    f"item_id INTEGER PRIMARY KEY, embedding float[{int(dim)}] distance_metric=cosine, kind TEXT)"
                )
            self._dim = str(dim)
        elif stored_name != name or stored_dim != str(dim):
            raise StoreError(
                f"this index was built with model {stored_name!r} ({stored_dim}-d vectors), not {name!r} "
                f"({dim}-d); use that model, or re-index with `freeret-tui index --reindex`"
            )
        stored_budget = self.image_max_pixels
        if image_max_pixels is None:
            return
        if stored_budget is None:
            # A new index, or one made before the budget was recorded (then its images were read at most 1024 px
            # a side, capped by the model's own processor): from now on this budget is the index's.
            self.set_meta("image_max_pixels", str(image_max_pixels))
        elif stored_budget != image_max_pixels:
            raise StoreError(
                f"this index reads images at up to {stored_budget} pixels (its image budget), not {image_max_pixels}; "
                f"use --image-max-pixels {stored_budget}, or re-index with `freeret-tui index --reindex`"
            )

    @property
    def model_name(self) -> str | None:
        return self._meta("model")

    @property
    def image_max_pixels(self) -> int | None:
        """The image budget this index's vectors were made with (None: not recorded yet)."""
        value = self._meta("image_max_pixels")
        return int(value) if value is not None else None

    def reset(self) -> None:
        """Forget every file, item and vector (re-index with another model)."""
        with self._db:
            self._db.execute("DELETE FROM items_fts")
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM meta")
            self._db.execute("DELETE FROM trash")
            self._db.execute("DELETE FROM item_half")
            self._db.execute("DROP TABLE IF EXISTS item_vectors")
            self._drop_prefilter()
        self._dim = None
        self._prefilter = None

    # -- writes ---------------------------------------------------------------------------------------------

    def file_row(self, path: Path) -> FileRow | None:
        row = self._db.execute("SELECT size, mtime, sha256, status FROM files WHERE path = ?", (str(path),)).fetchone()
        return FileRow(int(row[0]), float(row[1]), row[2], row[3]) if row else None

    def file_states(self, root: Path) -> dict[str, tuple[int, float]]:
        """path → (size, mtime) of every file stored under ``root`` (the reconcile scan's "mark" side)."""
        rows = self._db.execute("SELECT path, size, mtime FROM files WHERE root = ?", (str(root),))
        return {p: (int(size), float(mtime)) for p, size, mtime in rows}

    def file_hashes(self) -> dict[str, tuple[str | None, str]]:
        """path → (content hash, status) of every stored file (what the churn checker compares with the disk)."""
        rows = self._db.execute("SELECT path, sha256, status FROM files")
        return {p: (sha, status) for p, sha, status in rows}

    def _drop_items(self, file_id: int, sha256: str | None = None) -> None:
        """Delete a file's items; with ``sha256``, keep their vectors in the trash for a moved copy to reuse."""
        self._sync_prefilter()  # inside the caller's write transaction: the prefilter's rows must go too
        rows = self._db.execute(
            "SELECT id, kind, text, page, line_start, line_end, chunk_no FROM items WHERE file_id = ?", (file_id,)
        ).fetchall()
        now = time.time()
        for item_id, kind, text, page, line_start, line_end, chunk_no in rows:
            self._db.execute("DELETE FROM items_fts WHERE rowid = ?", (item_id,))
            if self._dim is None:
                continue
            if sha256:
                vector = self._db.execute(
                    "SELECT embedding FROM item_vectors WHERE item_id = ?", (item_id,)
                ).fetchone()
                if vector:
                    self._db.execute(
                        "INSERT INTO trash(sha256, kind, text, page, line_start, line_end, chunk_no, embedding, "
                        "removed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (sha256, kind, text, page, line_start, line_end, chunk_no, vector[0], now),
                    )
            self._db.execute("DELETE FROM item_vectors WHERE item_id = ?", (item_id,))
            self._db.execute("DELETE FROM item_half WHERE item_id = ?", (item_id,))
            if self._prefilter is not None:
                first = item_id * self._prefilter.assignments
                self._db.execute("DELETE FROM item_bits WHERE entry BETWEEN ? AND ?",
                                 (first, first + self._prefilter.assignments - 1))
        self._db.execute("DELETE FROM items WHERE file_id = ?", (file_id,))

    def _upsert_file(self, path: Path, root: Path, kind: str | None, size: int, mtime: float, **extra: object) -> int:
        row = self._db.execute("SELECT id, sha256 FROM files WHERE path = ?", (str(path),)).fetchone()
        values = (str(root), kind, size, mtime, extra.get("sha256"), extra["status"], extra.get("error"), time.time())
        if row:
            self._drop_items(row[0], row[1])
            self._db.execute(
                "UPDATE files SET root=?, kind=?, size=?, mtime=?, sha256=?, status=?, error=?, indexed_at=? "
                "WHERE id = ?",
                (*values, row[0]),
            )
            return int(row[0])
        self._db.execute(
            "INSERT INTO files(path, root, kind, size, mtime, sha256, status, error, indexed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(path), *values),
        )
        return int(self._db.last_insert_rowid())

    def put_file(
        self,
        path: Path,
        root: Path,
        size: int,
        mtime: float,
        sha256: str,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        embedded: bool = True,
    ) -> list[int]:
        """Replace everything stored for ``path`` with these chunks and vectors; returns the new item ids.

        ``embedded`` False: the vectors were reused from a file with the same content (not counted as model work).
        """
        if self._dim is None:
            raise StoreError("bind a model to the index before writing vectors")
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        kind = chunks[0].kind.value if chunks else None
        ids: list[int] = []
        # vec0 in sqlite-vec 0.1.9 has no INSERT OR REPLACE: old rows are deleted first, in the same transaction.
        with self._db:
            self._sync_prefilter()  # under the write lock: another process may have built or rebuilt it
            file_id = self._upsert_file(path, root, kind, size, mtime, sha256=sha256, status="indexed")
            for chunk, vector in zip(chunks, vectors, strict=True):
                self._db.execute(
                    "INSERT INTO items(file_id, kind, title, text, page, line_start, line_end, chunk_no) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (file_id, chunk.kind.value, chunk.title, chunk.text, chunk.page, chunk.line_start,
                     chunk.line_end, chunk.chunk_no),
                )
                item_id = int(self._db.last_insert_rowid())
                self._db.execute(
                    "INSERT INTO items_fts(rowid, title, text) VALUES (?, ?, ?)", (item_id, chunk.title, chunk.text)
                )
                self._insert_vector(item_id, np.asarray(vector, dtype=np.float32), chunk.kind.value)
                ids.append(item_id)
            if embedded and chunks:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('embedded_items', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
                    (str(len(chunks)), len(chunks)),
                )
        return ids

    def _insert_vector(self, item_id: int, vector: np.ndarray, kind: str) -> None:
        self._db.execute(
            "INSERT INTO item_vectors(item_id, embedding, kind) VALUES (?, ?, ?)", (item_id, vector.tobytes(), kind)
        )
        self._insert_half(item_id, vector)
        prefilter = self._prefilter
        if prefilter is not None:
            bits = ann.sign_bits(vector, prefilter.centre)[0]
            cells = ann.assign(vector, prefilter.centre, prefilter.centroids)[0][: prefilter.assignments]
            for slot, cell in enumerate(cells):
                self._insert_bits(item_id * prefilter.assignments + slot, int(cell), bits, kind)

    def _insert_bits(self, entry: int, cell: int, bits: np.ndarray, kind: str) -> None:
        self._db.execute(
            "INSERT INTO item_bits(entry, cell, embedding, kind) VALUES (?, ?, vec_bit(?), ?)",
            (entry, cell, bits.tobytes(), kind),
        )

    def _insert_half(self, item_id: int, vector: np.ndarray) -> None:
        # A plain table, not vec0: 200 point lookups into vec0's float table cost 145 ms at 10k (overflow-page
        # walks); into this one 2.9 ms at 1M.
        self._db.execute(
            "INSERT INTO item_half(item_id, vector) VALUES (?, ?)", (item_id, vector.astype(np.float16).tobytes())
        )

    @property
    def embedded_items(self) -> int:
        """How many items the model has embedded into this index (reused vectors not counted)."""
        return int(self._meta("embedded_items") or 0)

    def reusable(self, sha256: str, path: Path) -> tuple[list[Chunk], np.ndarray] | None:
        """Chunks and vectors of content already embedded (a copy, or a moved file's trash), re-homed to ``path``."""
        if self._dim is None:
            return None
        row = self._db.execute(
            "SELECT id FROM files WHERE sha256 = ? AND status = 'indexed' AND path != ? LIMIT 1", (sha256, str(path))
        ).fetchone()
        if row:
            rows = self._db.execute(
                "SELECT items.kind, items.text, items.page, items.line_start, items.line_end, items.chunk_no, "
                "item_vectors.embedding FROM items JOIN item_vectors ON item_vectors.item_id = items.id "
                "WHERE items.file_id = ? ORDER BY items.chunk_no",
                (row[0],),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT kind, text, page, line_start, line_end, chunk_no, embedding FROM trash WHERE sha256 = ? "
                "AND removed_at = (SELECT MAX(removed_at) FROM trash WHERE sha256 = ?) ORDER BY chunk_no",
                (sha256, sha256),
            ).fetchall()
        if not rows:
            return None
        chunks = [Chunk(path, Kind(k), text, path.name, page, ls, le, no) for k, text, page, ls, le, no, _ in rows]
        vectors = np.stack([np.frombuffer(r[6], dtype=np.float32) for r in rows])
        return chunks, vectors

    def touch_file(self, path: Path, size: int, mtime: float) -> None:
        """Same content, new size/mtime stamp (a `touch`, a save without changes): nothing to embed."""
        with self._db:
            self._db.execute("UPDATE files SET size = ?, mtime = ? WHERE path = ?", (size, mtime, str(path)))

    def put_skip(self, path: Path, root: Path, size: int, mtime: float, reason: str, failed: bool = False) -> None:
        """Record that ``path`` was not indexed and why (its old items, if any, go)."""
        with self._db:
            self._upsert_file(path, root, None, size, mtime, status="failed" if failed else "skipped", error=reason)

    def remove_file(self, path: Path) -> None:
        """Forget ``path``; its vectors wait in the trash in case the same content shows up elsewhere."""
        with self._db:
            row = self._db.execute("SELECT id, sha256 FROM files WHERE path = ?", (str(path),)).fetchone()
            if row:
                self._drop_items(row[0], row[1])
                self._db.execute("DELETE FROM files WHERE id = ?", (row[0],))

    def purge_trash(self, older_than: float) -> int:
        """Drop trashed vectors removed before the ``older_than`` timestamp; returns how many went."""
        with self._db:
            self._db.execute("DELETE FROM trash WHERE removed_at < ?", (older_than,))
            return int(self._db.changes())

    # -- the daemon's persistent queue and roots ------------------------------------------------------------

    def enqueue(self, entries: Iterable[tuple[Path, Path]], due: float) -> None:
        """Queue (root, path) pairs to be looked at from ``due`` on; a path queued again waits for the later time
        (that is the debounce: a burst of events on one file is handled once, after it settles)."""
        with self._db:
            for root, path in entries:
                self._db.execute(
                    "INSERT INTO queue(path, root, due) VALUES (?, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET due = MAX(due, excluded.due), root = excluded.root",
                    (str(path), str(root), due),
                )

    def due(self, now: float, limit: int) -> list[tuple[Path, Path, float]]:
        """(root, path, due) of queued paths that are due, oldest first."""
        rows = self._db.execute("SELECT root, path, due FROM queue WHERE due <= ? ORDER BY due LIMIT ?", (now, limit))
        return [(Path(r), Path(p), float(d)) for r, p, d in rows]

    def dequeue(self, path: Path, due: float) -> None:
        """Done with ``path`` as queued at ``due``; a newer event queued meanwhile stays."""
        self._db.execute("DELETE FROM queue WHERE path = ? AND due <= ?", (str(path), due))

    def queue_length(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(due) FROM queue").fetchone()
        return None if row[0] is None else float(row[0])

    def set_root(self, root: Path, online: bool, scanned_at: float | None = None) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO roots(path, online, scanned_at) VALUES (?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "online = excluded.online, scanned_at = COALESCE(excluded.scanned_at, scanned_at)",
                (str(root), int(online), scanned_at),
            )

    def roots(self) -> list[tuple[Path, bool, float | None]]:
        """(folder, online, last full scan) for every watched root."""
        rows = self._db.execute("SELECT path, online, scanned_at FROM roots ORDER BY path")
        return [(Path(p), bool(o), s) for p, o, s in rows]

    # -- bit prefilter and maintenance ----------------------------------------------------------------------

    def vector_count(self) -> int:
        if self._dim is None:
            return 0
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def _sync_prefilter(self) -> None:
        """Load the prefilter's centre and centroids if they are not the ones in the database (first open, or
        another process built or rebuilt it since). One meta read when nothing changed."""
        version = self._meta("prefilter_version")
        if version is None or self._meta("prefilter_layout") != _LAYOUT:
            self._prefilter = None  # none yet, or an older layout that the next ensure_prefilter replaces
            return
        if self._prefilter is not None and self._prefilter.version == version:
            return
        centre = np.frombuffer(bytes.fromhex(self._meta("bit_centre") or ""), dtype=np.float32)
        blobs = [b for (b,) in self._db.execute("SELECT centroid FROM bit_cells ORDER BY cell")]
        centroids = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
        self._prefilter = _Prefilter(version, centre, centroids, int(self._meta("prefilter_assignments") or 1))

    @property
    def prefilter_cells(self) -> int:
        """Cells of the prefilter; 0 while the index is small enough for exact search."""
        self._sync_prefilter()
        return 0 if self._prefilter is None else len(self._prefilter.centroids)

    def _drop_prefilter(self) -> None:
        for table in ("item_bits", "bit_cells"):
            self._db.execute(f"DROP TABLE IF EXISTS {table}")
        self._db.execute("DELETE FROM meta WHERE key LIKE 'prefilter_%' OR key = 'bit_centre'")

    def build_prefilter(self) -> None:
        """(Re)build the prefilter: centre = mean of a sample, cells = k-means of that sample, then every vector's
        cell and sign bits. One transaction: readers keep the old prefilter until it commits.

        Vectors are read from ``item_half``; the bits go in cell by cell: vec0 keeps a partly filled chunk per
        cell, and inserting in vector order touched a different chunk each time (the cache spilled to the WAL and
        a 1M build did not finish in 10 min)."""
        if self._dim is None:
            return
        with self._db:
            self._fill_half()
            count = self.vector_count()
            sample = self._halves([b for (b,) in self._db.execute(
                "SELECT vector FROM item_half WHERE item_id IN (SELECT id FROM items ORDER BY random() LIMIT ?)",
                (ann.training_size(count),),
            )])
            centre = sample.mean(axis=0) if len(sample) else np.zeros(int(self._dim), np.float32)
            centroids = ann.train_cells(sample, centre, ann.cell_count(count)) if len(sample) else centre[None, :]
            del sample
            self._drop_prefilter()
            self._db.execute(
                f"CREATE VIRTUAL TABLE item_bits USING vec0(entry INTEGER PRIMARY KEY, cell INTEGER PARTITION KEY, "
                f"embedding bit[{int(self._dim)}], kind TEXT, chunk_size={ann.CELL_SIZE * ann.ASSIGNMENTS})"
            )
            self._index_cells()
            self._db.execute("CREATE TABLE bit_cells (cell INTEGER PRIMARY KEY, centroid BLOB NOT NULL)")
            for cell, centroid in enumerate(centroids):
                self._db.execute("INSERT INTO bit_cells(cell, centroid) VALUES (?, ?)", (cell, centroid.tobytes()))
            ids: list[int] = []
            kinds: list[str] = []
            cells: list[np.ndarray] = []
            bits: list[np.ndarray] = []  # 192 bytes a vector at 1536-d: 200 MB at 1M, for the cell-order insert
            rows = self._db.execute(
                "SELECT item_half.item_id, items.kind, item_half.vector FROM item_half "
                "JOIN items ON items.id = item_half.item_id"
            )
            while batch := list(islice(rows, _BUILD_BATCH)):
                vectors = self._halves([r[2] for r in batch])
                ids += [int(r[0]) for r in batch]
                kinds += [r[1] for r in batch]
                cells.append(ann.assign(vectors, centre, centroids))
                bits.append(ann.sign_bits(vectors, centre))
            width = min(ann.ASSIGNMENTS, len(centroids))
            if ids:
                all_cells = np.concatenate(cells).ravel()  # entry e: vector e // width, its slot e % width
                all_bits = np.concatenate(bits)
                for e in np.argsort(all_cells, kind="stable"):
                    item = int(e) // width
                    entry = ids[item] * width + int(e) % width
                    self._insert_bits(entry, int(all_cells[e]), all_bits[item], kinds[item])
            # A fresh version each build (a counter would restart after `reset` and fool a reader holding the old).
            for key, value in (("bit_centre", centre.astype(np.float32).tobytes().hex()),
                               ("prefilter_size", str(count)), ("prefilter_assignments", str(width)),
                               ("prefilter_layout", _LAYOUT), ("prefilter_version", str(time.time_ns()))):
                self.set_meta(key, value)
            self._sync_prefilter()

    def _fill_half(self) -> None:
        """Give every vector its float16 copy (indexes written before ``item_half`` existed): one slow scan of
        vec0's table, once."""
        halves = int(self._db.execute("SELECT COUNT(*) FROM item_half").fetchone()[0])
        if halves == self.vector_count():
            return
        for item_id, blob in self._db.execute("SELECT item_id, embedding FROM item_vectors"):
            self._db.execute(
                "INSERT OR IGNORE INTO item_half(item_id, vector) VALUES (?, ?)",
                (item_id, np.frombuffer(blob, dtype=np.float32).astype(np.float16).tobytes()),
            )

    def _halves(self, blobs: Sequence[bytes]) -> np.ndarray:
        """``item_half`` blobs as a float32 matrix, one row each."""
        if not blobs:
            return np.empty((0, int(self._dim or 0)), dtype=np.float32)
        return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1).astype(np.float32)

    def _index_cells(self) -> None:
        """Index vec0's list of chunks by cell. Without it every probed cell scans the whole list: 1.5 ms a cell at
        1M vectors, 0.01 ms with it (benchmarks/stage1_latency.py). The list is vec0's own shadow table (sqlite-vec
        0.1.9 layout); were it laid out otherwise, queries would stay right, only slower, so that is not fatal."""
        import apsw

        try:
            self._db.execute("CREATE INDEX item_bits_chunks_cell ON item_bits_chunks(partition00)")
        except apsw.SQLError as err:
            print(f"freeret-tui: prefilter cells stay unindexed ({err})", file=sys.stderr)

    def ensure_prefilter(self, minimum: int = PREFILTER_MIN) -> bool:
        """Build the prefilter once the index reaches ``minimum`` vectors, and again each time it has grown
        ``_REBUILD_GROWTH`` times over (amortised: the rebuilds of an index grown to n cost about 2n vector
        writes in all). True when one exists."""
        if self._dim is None:
            return False
        self._sync_prefilter()
        count = self.vector_count()
        built_for = int(self._meta("prefilter_size") or 0)
        if (self._prefilter is None and count >= minimum) or (
            self._prefilter is not None and count >= _REBUILD_GROWTH * max(built_for, minimum)
        ):
            self.build_prefilter()
        return self._prefilter is not None

    def maintenance(self) -> dict[str, object]:
        """Integrity check, then rebuild the vector tables and VACUUM to give back the space deletions left."""
        problems = [r[0] for r in self._db.execute("PRAGMA integrity_check")]
        orphans = int(self._db.execute(
            "SELECT COUNT(*) FROM items_fts WHERE rowid NOT IN (SELECT id FROM items)").fetchone()[0])
        size_before = self._bytes_on_disk()
        if self._dim is not None:
            with self._db:
                self._db.execute("DELETE FROM items_fts WHERE rowid NOT IN (SELECT id FROM items)")
                rows = self._db.execute(
                    "SELECT item_id, embedding, kind FROM item_vectors WHERE item_id IN (SELECT id FROM items)"
                ).fetchall()
                self._db.execute("DROP TABLE item_vectors")
                self._db.execute(
                    f"CREATE VIRTUAL TABLE item_vectors USING vec0(item_id INTEGER PRIMARY KEY, "
                    f"embedding float[{int(self._dim)}] distance_metric=cosine, kind TEXT)"
                )
                for item_id, blob, kind in rows:
                    self._db.execute("INSERT INTO item_vectors(item_id, embedding, kind) VALUES (?, ?, ?)",
                                     (item_id, blob, kind))
            if self._prefilter is not None:
                self.build_prefilter()
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM's pages sit in the WAL until then
        size_after = self._bytes_on_disk()
        return {
            "integrity": "ok" if problems == ["ok"] else problems,
            "orphan_fts_rows_removed": orphans,
            "bytes_before": size_before,
            "bytes_after": size_after,
        }

    def _bytes_on_disk(self) -> int:
        """The database and its WAL, as a person's disk sees them."""
        if self.path == ":memory:":
            return 0
        files = [Path(self.path), Path(self.path + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())

    # -- reads ----------------------------------------------------------------------------------------------

    def dense(
        self, vector: np.ndarray, k: int, kinds: Iterable[Kind] | None = None, exact: bool = False
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest items by cosine similarity, best first: (item id, similarity).

        Exact brute force until the prefilter exists (large indexes), then cells + bits + exact rescore unless
        ``exact``.
        """
        if self._dim is None or k < 1:
            return []
        vector = np.asarray(vector, dtype=np.float32)
        wanted = [kind.value for kind in kinds] if kinds else []
        kind_sql = f" AND kind IN ({', '.join('?' * len(wanted))})" if wanted else ""
        k = min(k, 4096)  # sqlite-vec's ceiling for k
        with self._db:  # one read snapshot: a rebuild committed meanwhile is seen whole or not at all
            self._sync_prefilter()
            if self._prefilter is not None and not exact:
                return self._prefiltered(self._prefilter, vector, k, wanted, kind_sql)
            sql = "SELECT item_id, distance FROM item_vectors WHERE embedding MATCH ? AND k = ?" + kind_sql
            rows = self._db.execute(sql + " ORDER BY distance", [vector.tobytes(), k, *wanted]).fetchall()
        return [(int(i), 1.0 - float(d)) for i, d in rows]

    def _prefiltered(
        self, prefilter: _Prefilter, vector: np.ndarray, k: int, wanted: list[str], kind_sql: str
    ) -> list[tuple[int, float]]:
        """Hamming candidates from the sign bits of the nearest cells, rescored exactly (cosine) in float16."""
        cells = ann.probe(vector, prefilter.centre, prefilter.centroids)
        bits = ann.sign_bits(vector, prefilter.centre)[0].tobytes()
        pool = min(4096, max(PREFILTER_POOL, k * PREFILTER_PER_HIT))
        # A vtab constraint `cell IN (…)` runs one KNN per cell (each returns up to `pool`); merged here, where a
        # vector found through both of its cells counts once.
        sql = (f"SELECT entry, distance FROM item_bits WHERE embedding MATCH vec_bit(?) AND k = ? "
               f"AND cell IN ({', '.join('?' * len(cells))})" + kind_sql)
        found = sorted(self._db.execute(sql, [bits, pool, *cells, *wanted]), key=lambda r: r[1])
        candidates = list(dict.fromkeys(entry // prefilter.assignments for entry, _ in found))[:pool]
        if not candidates:
            return []
        halves = self._db.execute(
            f"SELECT item_id, vector FROM item_half WHERE item_id IN ({', '.join('?' * len(candidates))})",
            candidates,
        ).fetchall()
        ids = [int(r[0]) for r in halves]
        matrix = self._halves([r[1] for r in halves])
        sims = matrix @ vector / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector) + 1e-12)
        order = np.argsort(-sims, kind="stable")[:k]
        return [(ids[i], float(sims[i])) for i in order]

    def lexical(self, text: str, k: int, kinds: Iterable[Kind] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best BM25 matches for any of the words in ``text`` (of ``kinds`` only, if given), best first:
        (item id, -bm25)."""
        terms = list(dict.fromkeys(t.lower() for t in _TOKEN.findall(text)))[:_MAX_QUERY_TERMS]
        if not terms or k < 1:
            return []
        query = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        if kinds:
            wanted = [kind.value for kind in kinds]
            rows = self._db.execute(
                "SELECT items_fts.rowid, bm25(items_fts) FROM items_fts JOIN items ON items.id = items_fts.rowid "
                f"WHERE items_fts MATCH ? AND items.kind IN ({', '.join('?' * len(wanted))}) "
                "ORDER BY bm25(items_fts) LIMIT ?", (query, *wanted, k)
            )
        else:
            rows = self._db.execute(
                "SELECT rowid, bm25(items_fts) FROM items_fts WHERE items_fts MATCH ? ORDER BY rank LIMIT ?",
                (query, k),
            )
        return [(int(i), -float(score)) for i, score in rows]

    def items(self, ids: Sequence[int], folder: str = "", after: float | None = None,
              before: float | None = None) -> dict[int, StoredItem]:
        """The stored items among ``ids`` whose file is in a folder whose path contains ``folder`` (any case)
        and was modified at or after ``after`` and before ``before`` (timestamps)."""
        if not ids:
            return {}
        where = [f"items.id IN ({', '.join('?' * len(ids))})"]
        params: list[object] = list(ids)
        if folder:
            # rtrim(path, path-without-slashes) drops the file name, leaving the folder with its trailing slash.
            where.append("instr(lower(rtrim(files.path, replace(files.path, '/', ''))), lower(?)) > 0")
            params.append(folder)
        if after is not None:
            where.append("files.mtime >= ?")
            params.append(after)
        if before is not None:
            where.append("files.mtime < ?")
            params.append(before)
        rows = self._db.execute(
            "SELECT items.id, files.path, items.kind, items.title, items.text, items.page, items.line_start, "
            "items.line_end, items.chunk_no, files.mtime FROM items JOIN files ON files.id = items.file_id "
            f"WHERE {' AND '.join(where)}",
            params,
        )
        out: dict[int, StoredItem] = {}
        for item_id, path, kind, title, text, page, line_start, line_end, chunk_no, mtime in rows:
            chunk = Chunk(Path(path), Kind(kind), text, title, page, line_start, line_end, chunk_no)
            out[int(item_id)] = StoredItem(int(item_id), chunk, float(mtime))
        return out

    def paths_under(self, roots: Sequence[Path]) -> list[str]:
        """Stored file paths that were indexed from any of ``roots``."""
        if not roots:
            return []
        rows = self._db.execute(
            f"SELECT path FROM files WHERE root IN ({', '.join('?' * len(roots))})", [str(r) for r in roots]
        )
        return [r[0] for r in rows]

    def paths_with_prefix(self, prefix: str) -> list[str]:
        """Stored file paths that start with ``prefix`` (everything under a folder that moved or vanished)."""
        rows = self._db.execute("SELECT path FROM files WHERE substr(path, 1, ?) = ?", (len(prefix), prefix))
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()
        out = {status: int(n) for status, n in rows}
        out["items"] = int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        return out

    def skips(self, limit: int = 50) -> list[tuple[str, str]]:
        """(path, reason) of the latest files not indexed, failed or skipped, newest first."""
        rows = self._db.execute(
            "SELECT path, error FROM files WHERE status IN ('skipped', 'failed') ORDER BY indexed_at DESC LIMIT ?",
            (limit,),
        )
        return [(p, e) for p, e in rows]

    def data_version(self) -> int:
        """Changes when another connection commits (readers poll this to refresh, e.g. the TUI's counts)."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()
