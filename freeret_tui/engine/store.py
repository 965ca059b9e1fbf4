"""The index database: owns every SQL string. SQLite through apsw (this Python's sqlite3 cannot load
extensions) with sqlite-vec for vectors and FTS5 for the lexical side of hybrid search.

Layout: ``files`` (one row per path, with its state or skip reason), ``items`` (chunks: passages, images,
pages), ``items_fts`` (FTS5 over title + text) and ``item_vectors`` (vec0, cosine). The vector table is made
when the first model writes, because its width is the model's hidden size; ``meta`` records which model, and a
different model is refused rather than mixing two embedding spaces.

Beside the index itself: ``queue`` (the daemon's persistent work list: a path is dequeued in the same transaction
that stores its result, so a killed daemon loses nothing), ``roots`` (watched folders, online or not), ``trash``
(vectors of removed files, kept a while so a moved or renamed file is recognised by its content hash and not
embedded again) and, once the index is large, ``item_bits`` (sign bits of the mean-centred vectors: a Hamming
prefilter whose candidates are rescored exactly with the float vectors).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
)
SCHEMA_VERSION = len(MIGRATIONS)

_TOKEN = re.compile(r"\w+", re.UNICODE)
# FTS5 caps query complexity; 64 terms keeps a pasted paragraph usable as a query.
_MAX_QUERY_TERMS = 64


# Below this many vectors exact search is fast enough; above it the bit prefilter answers. Measured at 1536-d on
# 2 cores (benchmarks/stage1_latency.py): exact 23.5 ms at 10k and 243 ms at 100k; prefilter 12 / 36 ms.
PREFILTER_MIN = 20_000
INDEX_FILE = "index.db"
# Hamming candidates per wanted hit before the float rescore: recall@10 vs exact 0.96-0.99 from 1k to 1M
# (benchmarks/stage1_latency.py); 50 gave 0.997 but 2.6x the time at 10k.
PREFILTER_OVERSAMPLE = 20
# Vectors sampled to estimate the mean that centres the sign bits (residual-stream vectors share a large mean
# direction; uncentred sign bits mostly encode it).
_CENTRE_SAMPLE = 20_000


@dataclass(frozen=True)
class StoredItem:
    item_id: int
    chunk: Chunk


@dataclass(frozen=True)
class FileRow:
    size: int
    mtime: float
    sha256: str | None
    status: str


def _bits(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Sign bits of the centred vectors, packed 8 per byte (any fixed bit order works for Hamming distance)."""
    return np.packbits(np.atleast_2d(vectors) - centre > 0, axis=1)


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
        centre = self._meta("bit_centre")
        self._centre = np.frombuffer(bytes.fromhex(centre), dtype=np.float32) if centre else None

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

    def bind_model(self, name: str, dim: int) -> None:
        """Tie this index to a model; refuse another model's vectors (re-index into a fresh data dir instead)."""
        stored_name, stored_dim = self._meta("model"), self._meta("dim")
        if stored_name is None:
            with self._db:
                self._db.execute("INSERT INTO meta(key, value) VALUES ('model', ?), ('dim', ?)", (name, str(dim)))
                self._db.execute(
                    f"CREATE VIRTUAL TABLE item_vectors USING vec0("
                    f"item_id INTEGER PRIMARY KEY, embedding float[{int(dim)}] distance_metric=cosine, kind TEXT)"
                )
            self._dim = str(dim)
            return
        if stored_name != name or stored_dim != str(dim):
            raise StoreError(
                f"this index was built with model {stored_name!r} ({stored_dim}-d vectors), not {name!r} "
                f"({dim}-d); use that model, or re-index with `freeret-tui index --reindex`"
            )

    @property
    def model_name(self) -> str | None:
        return self._meta("model")

    def reset(self) -> None:
        """Forget every file, item and vector (re-index with another model)."""
        with self._db:
            self._db.execute("DELETE FROM items_fts")
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM meta")
            self._db.execute("DELETE FROM trash")
            self._db.execute("DROP TABLE IF EXISTS item_vectors")
            self._db.execute("DROP TABLE IF EXISTS item_bits")
        self._dim = None
        self._centre = None

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
            if self._centre is not None:
                self._db.execute("DELETE FROM item_bits WHERE item_id = ?", (item_id,))
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
        if self._centre is not None:
            self._insert_bits(item_id, vector, kind, self._centre)

    def _insert_bits(self, item_id: int, vector: np.ndarray, kind: str, centre: np.ndarray) -> None:
        # The float16 copy rides along as an auxiliary column: the Hamming KNN query returns it with each
        # candidate, where 200 point lookups into vec0's float table cost 145 ms at 10k (overflow-page walks).
        self._db.execute(
            "INSERT INTO item_bits(item_id, embedding, kind, vector) VALUES (?, vec_bit(?), ?, ?)",
            (item_id, _bits(vector, centre)[0].tobytes(), kind, vector.astype(np.float16).tobytes()),
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

    def build_prefilter(self) -> None:
        """(Re)build the sign-bit table: centre = mean of a sample of the stored vectors."""
        if self._dim is None:
            return
        sample = [
            np.frombuffer(b, dtype=np.float32)
            for (b,) in self._db.execute(
                "SELECT embedding FROM item_vectors WHERE item_id IN "
                "(SELECT id FROM items ORDER BY random() LIMIT ?)", (_CENTRE_SAMPLE,)
            )
        ]
        centre = np.mean(sample, axis=0).astype(np.float32) if sample else np.zeros(int(self._dim), np.float32)
        with self._db:
            self._db.execute("DROP TABLE IF EXISTS item_bits")
            self._db.execute(
                f"CREATE VIRTUAL TABLE item_bits USING vec0(item_id INTEGER PRIMARY KEY, embedding bit[{int(self._dim)}],"
                f" kind TEXT, +vector BLOB)"
            )
            for item_id, blob, kind in self._db.execute("SELECT item_id, embedding, kind FROM item_vectors").fetchall():
                self._insert_bits(item_id, np.frombuffer(blob, dtype=np.float32), kind, centre)
            self.set_meta("bit_centre", centre.tobytes().hex())
        self._centre = centre

    def ensure_prefilter(self, minimum: int = PREFILTER_MIN) -> bool:
        """Build the prefilter once the index reaches ``minimum`` vectors; True when one exists."""
        if self._centre is None and self._dim is not None and self.vector_count() >= minimum:
            self.build_prefilter()
        return self._centre is not None

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
            if self._centre is not None:
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

        Exact brute force until the prefilter exists (large indexes), then bits + exact rescore unless ``exact``.
        """
        if self._dim is None or k < 1:
            return []
        vector = np.asarray(vector, dtype=np.float32)
        wanted = [kind.value for kind in kinds] if kinds else []
        kind_sql = f" AND kind IN ({', '.join('?' * len(wanted))})" if wanted else ""
        k = min(k, 4096)  # sqlite-vec's ceiling for k
        if self._centre is not None and not exact:
            return self._prefiltered(vector, k, wanted, kind_sql)
        sql = "SELECT item_id, distance FROM item_vectors WHERE embedding MATCH ? AND k = ?" + kind_sql
        rows = self._db.execute(sql + " ORDER BY distance", [vector.tobytes(), k, *wanted])
        return [(int(i), 1.0 - float(d)) for i, d in rows]

    def _prefiltered(self, vector: np.ndarray, k: int, wanted: list[str], kind_sql: str) -> list[tuple[int, float]]:
        """Hamming candidates from the sign bits, rescored exactly (cosine) with their float vectors."""
        assert self._centre is not None
        bits = _bits(vector, self._centre)[0].tobytes()
        pool = min(4096, k * PREFILTER_OVERSAMPLE)
        sql = "SELECT item_id, vector FROM item_bits WHERE embedding MATCH vec_bit(?) AND k = ?" + kind_sql
        rows = self._db.execute(sql, [bits, pool, *wanted]).fetchall()
        if not rows:
            return []
        ids = [int(r[0]) for r in rows]
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(ids), -1).astype(np.float32)
        sims = matrix @ vector / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector) + 1e-12)
        order = np.argsort(-sims, kind="stable")[:k]
        return [(ids[i], float(sims[i])) for i in order]

    def lexical(self, text: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` best BM25 matches for any of the words in ``text``, best first: (item id, -bm25)."""
        terms = list(dict.fromkeys(t.lower() for t in _TOKEN.findall(text)))[:_MAX_QUERY_TERMS]
        if not terms or k < 1:
            return []
        query = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self._db.execute(
            "SELECT rowid, bm25(items_fts) FROM items_fts WHERE items_fts MATCH ? ORDER BY rank LIMIT ?", (query, k)
        )
        return [(int(i), -float(score)) for i, score in rows]

    def items(self, ids: Sequence[int]) -> dict[int, StoredItem]:
        if not ids:
            return {}
        rows = self._db.execute(
            "SELECT items.id, files.path, items.kind, items.title, items.text, items.page, items.line_start, "
            f"items.line_end, items.chunk_no FROM items JOIN files ON files.id = items.file_id "
            f"WHERE items.id IN ({', '.join('?' * len(ids))})",
            list(ids),
        )
        out: dict[int, StoredItem] = {}
        for item_id, path, kind, title, text, page, line_start, line_end, chunk_no in rows:
            chunk = Chunk(Path(path), Kind(kind), text, title, page, line_start, line_end, chunk_no)
            out[int(item_id)] = StoredItem(int(item_id), chunk)
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
