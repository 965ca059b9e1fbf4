"""The index database: owns every SQL string. SQLite through apsw (this Python's sqlite3 cannot load
extensions) with sqlite-vec for vectors and FTS5 for the lexical side of hybrid search.

Layout: ``files`` (one row per path, with its state or skip reason), ``items`` (chunks: passages, images,
pages), ``items_fts`` (FTS5 over title + text) and ``item_vectors`` (vec0, cosine). The vector table is made
when the first model writes, because its width is the model's hidden size; ``meta`` records which model, and a
different model is refused rather than mixing two embedding spaces.
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
)
SCHEMA_VERSION = len(MIGRATIONS)

_TOKEN = re.compile(r"\w+", re.UNICODE)
# FTS5 caps query complexity; 64 terms keeps a pasted paragraph usable as a query.
_MAX_QUERY_TERMS = 64


@dataclass(frozen=True)
class StoredItem:
    item_id: int
    chunk: Chunk


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
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")  # one writer, many readers
    return conn


class Store:
    """One index database. Every write is one transaction, rolled back whole on any error."""

    def __init__(self, path: Path | str = ":memory:"):
        self.path = str(path)
        self._db = _connect(self.path)
        self._migrate()
        self._dim = self._meta("dim")

    # -- schema ---------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer freeret-tui (schema {version} > {SCHEMA_VERSION}); upgrade"
            )
        with self._db:
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

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
            self._db.execute("DROP TABLE IF EXISTS item_vectors")
        self._dim = None

    # -- writes ---------------------------------------------------------------------------------------------

    def file_state(self, path: Path) -> tuple[int, float] | None:
        row = self._db.execute("SELECT size, mtime FROM files WHERE path = ?", (str(path),)).fetchone()
        return (row[0], row[1]) if row else None

    def _drop_items(self, file_id: int) -> None:
        ids = [r[0] for r in self._db.execute("SELECT id FROM items WHERE file_id = ?", (file_id,))]
        for item_id in ids:
            self._db.execute("DELETE FROM items_fts WHERE rowid = ?", (item_id,))
            if self._dim is not None:
                self._db.execute("DELETE FROM item_vectors WHERE item_id = ?", (item_id,))
        self._db.execute("DELETE FROM items WHERE file_id = ?", (file_id,))

    def _upsert_file(self, path: Path, root: Path, kind: str | None, size: int, mtime: float, **extra: object) -> int:
        row = self._db.execute("SELECT id FROM files WHERE path = ?", (str(path),)).fetchone()
        values = (str(root), kind, size, mtime, extra.get("sha256"), extra["status"], extra.get("error"), time.time())
        if row:
            self._drop_items(row[0])
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
    ) -> list[int]:
        """Replace everything stored for ``path`` with these chunks and vectors; returns the new item ids."""
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
                self._db.execute(
                    "INSERT INTO item_vectors(item_id, embedding, kind) VALUES (?, ?, ?)",
                    (item_id, np.asarray(vector, dtype=np.float32).tobytes(), chunk.kind.value),
                )
                ids.append(item_id)
        return ids

    def put_skip(self, path: Path, root: Path, size: int, mtime: float, reason: str) -> None:
        """Record that ``path`` was not indexed and why (its old items, if any, go)."""
        with self._db:
            self._upsert_file(path, root, None, size, mtime, status="skipped", error=reason)

    def remove_file(self, path: Path) -> None:
        with self._db:
            row = self._db.execute("SELECT id FROM files WHERE path = ?", (str(path),)).fetchone()
            if row:
                self._drop_items(row[0])
                self._db.execute("DELETE FROM files WHERE id = ?", (row[0],))

    # -- reads ----------------------------------------------------------------------------------------------

    def dense(self, vector: np.ndarray, k: int, kinds: Iterable[Kind] | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest items by cosine similarity, best first: (item id, similarity)."""
        if self._dim is None or k < 1:
            return []
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        k = min(k, 4096)  # sqlite-vec's ceiling for k
        sql = "SELECT item_id, distance FROM item_vectors WHERE embedding MATCH ? AND k = ?"
        params: list[object] = [blob, k]
        wanted = [kind.value for kind in kinds] if kinds else []
        if wanted:
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
            params += wanted
        return [(int(i), 1.0 - float(d)) for i, d in self._db.execute(sql + " ORDER BY distance", params)]

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

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()
        out = {status: int(n) for status, n in rows}
        out["items"] = int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        return out

    def skips(self, limit: int = 50) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT path, error FROM files WHERE status = 'skipped' ORDER BY indexed_at DESC LIMIT ?", (limit,)
        )
        return [(p, e) for p, e in rows]

    def close(self) -> None:
        self._db.close()
