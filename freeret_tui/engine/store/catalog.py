"""The catalog: files (state or skip reason), items (passages, images, pages), their FTS5 index, and the trash
of removed files' vectors kept for content that shows up again. Vectors themselves live in vectors.py; this
module hands them over and takes them back through its methods, never its tables.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from freeret_tui.engine.store.paths import path_key, path_text, prefix_bytes
from freeret_tui.engine.store.tx import Transactions
from freeret_tui.engine.types import Chunk, Kind, title_of
from freeret_tui.errors import StoreError

_TOKEN = re.compile(r"\w+", re.UNICODE)
# FTS5 caps query complexity; 64 terms keeps a pasted paragraph usable as a query.
_MAX_QUERY_TERMS = 64


@dataclass(frozen=True)
class StoredItem:
    item_id: int
    chunk: Chunk
    dated: float | None = None  # the file's date when it was indexed: a photo's taken time, else its mtime
    sha256: str = ""  # the file's content hash ("" where none was taken): identical files share it


@dataclass(frozen=True)
class FileRow:
    size: int
    mtime: float
    sha256: str | None
    status: str
    sidecars: str = ""  # sidecars.sidecar_state when it was indexed
    pixels: str | None = None  # photo_meta.pixels_digest when it was embedded


class Catalog(Transactions):
    """Files, items, FTS and trash; part of ``Store``."""

    _db: Any
    _dim: str | None

    def file_row(self, path: Path) -> FileRow | None:
        row = self._db.execute("SELECT size, mtime, sha256, status, sidecars, pixels FROM files WHERE path = ?",
                               (path_key(path),)).fetchone()
        return FileRow(int(row[0]), float(row[1]), *row[2:]) if row else None

    def file_states(self, root: Path) -> dict[str, tuple[int, float, str | None]]:
        """path → (size, mtime, sidecars) of every file stored under ``root`` (the reconcile scan's "mark" side);
        sidecars None for a file not indexed (a skipped photo's sidecars change nothing)."""
        rows = self._db.execute("SELECT path, size, mtime, status, sidecars FROM files WHERE root = ?",
                                (path_key(root),))
        return {path_text(p): (int(size), float(mtime), sidecars if status == "indexed" else None)
                for p, size, mtime, status, sidecars in rows}

    def file_hashes(self) -> dict[str, tuple[str | None, str]]:
        """path → (content hash, status) of every stored file (what the churn checker compares with the disk)."""
        rows = self._db.execute("SELECT path, sha256, status FROM files")
        return {path_text(p): (sha, status) for p, sha, status in rows}

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
            vector = self._remove_vector(item_id, keep=bool(sha256))
            if vector is not None:
                self._db.execute(
                    "INSERT INTO trash(sha256, kind, text, page, line_start, line_end, chunk_no, embedding, "
                    "removed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha256, kind, text, page, line_start, line_end, chunk_no, vector, now),
                )
        self._db.execute("DELETE FROM items WHERE file_id = ?", (file_id,))

    def _upsert_file(self, path: Path, root: Path, kind: str | None, size: int, mtime: float, **extra: object) -> int:
        row = self._db.execute("SELECT id, sha256 FROM files WHERE path = ?", (path_key(path),)).fetchone()
        values = (path_key(root), kind, size, mtime, extra.get("sha256"), extra["status"], extra.get("error"),
                  time.time(), extra.get("taken"), extra.get("sidecars", ""), extra.get("pixels"))
        if row:
            self._drop_items(row[0], row[1])
            self._db.execute(
                "UPDATE files SET root=?, kind=?, size=?, mtime=?, sha256=?, status=?, error=?, indexed_at=?, "
                "taken=?, sidecars=?, pixels=? WHERE id = ?",
                (*values, row[0]),
            )
            return int(row[0])
        self._db.execute(
            "INSERT INTO files(path, root, kind, size, mtime, sha256, status, error, indexed_at, taken, sidecars, "
            "pixels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path_key(path), *values),
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
        taken: float | None = None,
        sidecars: str = "",
        pixels: str | None = None,
    ) -> list[int]:
        """Replace everything stored for ``path`` with these chunks and vectors; returns the new item ids.

        ``embedded`` False: the vectors were reused from a file with the same content (not counted as model work).
        ``taken``: when a photo was taken (photo_meta.py), the date a person knows it by; ``sidecars``: the
        fingerprint of its sidecars its words were read with (sidecars.sidecar_state); ``pixels``: its digest without
        its metadata (photo_meta.pixels_digest).
        """
        if self._dim is None:
            raise StoreError("bind a model to the index before writing vectors")
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        kind = chunks[0].kind.value if chunks else None
        ids: list[int] = []
        # vec0 in sqlite-vec 0.1.9 has no INSERT OR REPLACE: old rows are deleted first, in the same transaction.
        with self._write():
            self._sync_prefilter()  # under the write lock: another process may have built or rebuilt it
            file_id = self._upsert_file(path, root, kind, size, mtime, sha256=sha256, status="indexed", taken=taken,
                                        sidecars=sidecars, pixels=pixels)
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
                self._add_meta("embedded_items", len(chunks))  # type: ignore[attr-defined]  # schema.py
        return ids

    @property
    def embedded_items(self) -> int:
        """How many items the model has embedded into this index (reused vectors not counted)."""
        return int(self._meta("embedded_items") or 0)

    def reusable(self, sha256: str, path: Path) -> tuple[list[Chunk], np.ndarray] | None:
        """Chunks and vectors of content already embedded (a copy, or a moved file's trash), re-homed to ``path``."""
        if self._dim is None:
            return None
        row = self._db.execute(
            "SELECT id FROM files WHERE sha256 = ? AND status = 'indexed' AND path != ? LIMIT 1",
            (sha256, path_key(path)),
        ).fetchone()
        if row:
            found = self._db.execute(
                "SELECT id, kind, text, page, line_start, line_end, chunk_no FROM items WHERE file_id = ? "
                "ORDER BY chunk_no", (row[0],),
            ).fetchall()
            blobs = self._vector_blobs([r[0] for r in found])
            rows = [(*r[1:], blobs[r[0]]) for r in found if r[0] in blobs]
        else:
            rows = self._db.execute(
                "SELECT kind, text, page, line_start, line_end, chunk_no, embedding FROM trash WHERE sha256 = ? "
                "AND removed_at = (SELECT MAX(removed_at) FROM trash WHERE sha256 = ?) ORDER BY chunk_no",
                (sha256, sha256),
            ).fetchall()
        if not rows:
            return None
        chunks = [Chunk(path, Kind(k), text, title_of(path), page, ls, le, no) for k, text, page, ls, le, no, _ in rows]
        vectors = np.stack([np.frombuffer(r[6], dtype=np.float32) for r in rows])
        return chunks, vectors

    def photos_to_reread(self) -> list[Path] | None:
        """The indexed photos whose date and own words were never read (an index made before they were); None once
        ``photos_reread`` said they were."""
        if self._meta("reread_photos") is None:  # type: ignore[attr-defined]  # schema.py
            return None
        rows = self._db.execute("SELECT path FROM files WHERE status = 'indexed' AND kind = ?", (Kind.IMAGE.value,))
        return [Path(path_text(p)) for (p,) in rows]

    def set_photo_meta(self, path: Path, taken: float | None, words: str, sidecars: str) -> None:
        """A photo's date and its own words (photo_meta.py), read with these sidecars (sidecars.sidecar_state), with
        its vector as it is: neither is part of it."""
        key = path_key(path)
        self._db.execute("UPDATE files SET taken = ?, sidecars = ? WHERE path = ?", (taken, sidecars, key))
        items = self._db.execute("SELECT items.id FROM items JOIN files ON files.id = items.file_id "
                                 "WHERE files.path = ? AND items.kind = ?", (key, Kind.IMAGE.value)).fetchall()
        for (item_id,) in items:
            self._db.execute("UPDATE items SET text = ? WHERE id = ?", (words, item_id))
            self._db.execute("UPDATE items_fts SET text = ? WHERE rowid = ?", (words, item_id))

    def photos_reread(self) -> None:
        with self._write():
            self._forget_meta("reread_photos")  # type: ignore[attr-defined]  # schema.py

    def touch_file(self, path: Path, size: int, mtime: float, sha256: str | None = None) -> None:
        """Same content, new size/mtime stamp (a `touch`, a save without changes): nothing to embed. With ``sha256``:
        a photo whose metadata alone was written (the same ``pixels``), its new content hash."""
        with self._write():
            self._db.execute("UPDATE files SET size = ?, mtime = ?, sha256 = coalesce(?, sha256) WHERE path = ?",
                             (size, mtime, sha256, path_key(path)))

    def put_skip(self, path: Path, root: Path, size: int, mtime: float, reason: str, failed: bool = False) -> None:
        """Record that ``path`` was not indexed and why (its old items, if any, go)."""
        with self._write():
            self._upsert_file(path, root, None, size, mtime, status="failed" if failed else "skipped", error=reason)

    def remove_file(self, path: Path) -> None:
        """Forget ``path``; its vectors wait in the trash in case the same content shows up elsewhere."""
        with self._write():
            row = self._db.execute("SELECT id, sha256 FROM files WHERE path = ?", (path_key(path),)).fetchone()
            if row:
                self._drop_items(row[0], row[1])
                self._db.execute("DELETE FROM files WHERE id = ?", (row[0],))

    def purge_trash(self, older_than: float) -> int:
        """Drop trashed vectors removed before the ``older_than`` timestamp; returns how many went."""
        with self._write():
            self._db.execute("DELETE FROM trash WHERE removed_at < ?", (older_than,))
            return int(self._db.changes())

    def item_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def kinds_of(self, ids: Sequence[int]) -> dict[int, str]:
        """item id -> kind ("text", "image", "page")."""
        if not ids:
            return {}
        rows = self._db.execute(f"SELECT id, kind FROM items WHERE id IN ({', '.join('?' * len(ids))})", list(ids))
        return {int(i): k for i, k in rows}

    def live_item_ids(self) -> set[int]:
        return {int(i) for (i,) in self._db.execute("SELECT id FROM items")}

    def _drop_orphan_fts(self) -> int:
        """Remove FTS rows whose item is gone; returns how many there were."""
        orphans = int(self._db.execute(
            "SELECT COUNT(*) FROM items_fts WHERE rowid NOT IN (SELECT id FROM items)").fetchone()[0])
        if orphans:
            self._db.execute("DELETE FROM items_fts WHERE rowid NOT IN (SELECT id FROM items)")
        return orphans

    def _clear_catalog(self) -> None:
        for table in ("items_fts", "files", "trash"):
            self._db.execute(f"DELETE FROM {table}")

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
        and is dated at or after ``after`` and before ``before`` (timestamps; a photo's date is when it was taken,
        where its EXIF says, else a file's is its modification time)."""
        if not ids:
            return {}
        where = [f"items.id IN ({', '.join('?' * len(ids))})"]
        params: list[object] = list(ids)
        if folder:
            # rtrim(path, path-without-slashes) drops the file name, leaving the folder with its trailing slash.
            where.append("instr(lower(rtrim(files.path, replace(files.path, '/', ''))), lower(?)) > 0")
            params.append(folder)
        if after is not None:
            where.append("coalesce(files.taken, files.mtime) >= ?")
            params.append(after)
        if before is not None:
            where.append("coalesce(files.taken, files.mtime) < ?")
            params.append(before)
        rows = self._db.execute(
            "SELECT items.id, files.path, items.kind, items.title, items.text, items.page, items.line_start, "
            "items.line_end, items.chunk_no, coalesce(files.taken, files.mtime), files.sha256 "
            f"FROM items JOIN files ON files.id = items.file_id WHERE {' AND '.join(where)}",
            params,
        )
        out: dict[int, StoredItem] = {}
        for item_id, path, kind, title, text, page, line_start, line_end, chunk_no, dated, sha256 in rows:
            chunk = Chunk(Path(path_text(path)), Kind(kind), text, title, page, line_start, line_end, chunk_no)
            out[int(item_id)] = StoredItem(int(item_id), chunk, float(dated), sha256 or "")
        return out

    def paths_under(self, roots: Sequence[Path]) -> list[str]:
        """Stored file paths that were indexed from any of ``roots``."""
        if not roots:
            return []
        rows = self._db.execute(
            f"SELECT path FROM files WHERE root IN ({', '.join('?' * len(roots))})", [path_key(r) for r in roots]
        )
        return [path_text(r[0]) for r in rows]

    def paths_with_prefix(self, prefix: str) -> list[str]:
        """Stored file paths that start with ``prefix`` (everything under a folder that moved or vanished)."""
        raw = prefix_bytes(prefix)
        rows = self._db.execute("SELECT path FROM files WHERE substr(CAST(path AS BLOB), 1, ?) = ?", (len(raw), raw))
        return [path_text(r[0]) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()
        out = {status: int(n) for status, n in rows}
        out["items"] = int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        return out

    def skips(self, limit: int = 50, offset: int = 0) -> list[tuple[str, str]]:
        """(path, reason) of the files not indexed, failed or skipped, newest first: ``limit`` of them (-1: all)
        from the ``offset``-th on."""
        rows = self._db.execute(
            "SELECT path, error FROM files WHERE status IN ('skipped', 'failed') ORDER BY indexed_at DESC, path "
            "LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [(path_text(p), e) for p, e in rows]
