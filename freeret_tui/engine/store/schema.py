"""The index's schema: numbered migrations, opening the database (apsw + sqlite-vec, WAL), the ``meta`` table,
and which model and image budget an index belongs to.
"""

from __future__ import annotations

import os
from typing import Any

from freeret_tui.engine.private import open_private
from freeret_tui.engine.store.tx import Transactions
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
    (
        # Each queued path's modification time: the daemon takes the newest files first, so on a first start over
        # a large library this year's photos are searchable long before the rest. NULL: gone (removed first).
        "ALTER TABLE queue ADD COLUMN mtime REAL",
    ),
    (
        # When a photo was taken (its EXIF): date filters and the date shown use it where it exists, since a copied
        # photo's mtime is the copy's. NULL for the rest.
        "ALTER TABLE files ADD COLUMN taken REAL",
        # Photos indexed before have neither their date nor their own words: the indexer reads them once
        # (catalog.photos_to_reread), with no model, since neither is part of a vector.
        "INSERT INTO meta(key, value) VALUES ('reread_photos', '1')",
    ),
    (
        # A fingerprint of a photo's sidecars (sidecars.py): a sidecar written, added or removed changes it, and
        # the photo's words and date are read again. '' for the rest, and for photos stored before: at the next
        # scan those that have sidecars are read with them.
        "ALTER TABLE files ADD COLUMN sidecars TEXT NOT NULL DEFAULT ''",
        # A JPEG's or PNG's digest without its metadata (photo_meta.pixels_digest): a keyword or a caption written
        # into the file keeps its vectors. NULL for the rest, and for photos stored before until they are embedded.
        "ALTER TABLE files ADD COLUMN pixels TEXT",
        # Photos stored before are read again once, with no model: their sidecars, the names of the faces marked
        # in them, a date their XMP holds and the place their GPS position names were not read then.
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('reread_photos', '1')",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
INDEX_FILE = "index.db"


def _private(path: str) -> None:
    """Create the database file (and fix an older one, its WAL and shared memory) readable by its owner only:
    it holds document text. SQLite gives the WAL and -shm files it creates the database file's mode."""
    try:
        os.close(open_private(path, os.O_RDWR))
    except OSError as err:
        raise StoreError(f"cannot open index database {path}: {err.strerror or err}") from None
    for name in (path + "-wal", path + "-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            continue


def rebuild_steps(path: str) -> list[str]:
    """The way out of a damaged index: the files are the source, so a new index is rebuilt from them."""
    return [f"move it aside: `mv {path} {path}.damaged` (and its -wal and -shm files if present)",
            "then `freeret-tui index FOLDER…` (or the TUI, or the daemon) builds a new index from your files"]


def damaged(path: str, err: Exception) -> StoreError:
    """The error for an index file SQLite cannot read as a database, with the way out."""
    return StoreError(f"the index {path} is damaged ({type(err).__name__}: {err})", rebuild_steps(path))


def _connect(path: str):  # -> apsw.Connection
    import apsw
    import sqlite_vec

    if path != ":memory:":
        _private(path)
    try:
        conn = apsw.Connection(path)
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        conn.enable_load_extension(False)
    except apsw.Error as err:
        raise StoreError(f"cannot open index database {path}: {err}") from None
    conn.set_busy_timeout(5000)
    try:  # the first statements read the file's header: a damaged one is reported here, with the way out
        conn.execute("PRAGMA foreign_keys = ON")
        # vec0 keeps vectors in blobs of 1024 (6 MB at 1536-d) spread over overflow pages that a write or a point
        # read walks from the start; 64 KiB pages make that walk 16x shorter (10k inserts: 5.1 s -> 1.7 s, exact
        # search 34 -> 25 ms). Only takes effect on a new database (before the first table and WAL).
        conn.execute("PRAGMA page_size = 65536")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")  # one writer, many readers
            # Reads map the file instead of copying each 64 KiB page out of the kernel's cache: the prefilter's
            # 400 float16 rescore rows, each on its own page, cost 2.9 ms a query at 100k vectors copied and 0.57 ms
            # mapped. Address space only: the pages are the kernel's page cache, shared, not this process's memory.
            conn.execute(f"PRAGMA mmap_size = {1 << 40}")
        conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
    except (apsw.CorruptError, apsw.NotADBError) as err:
        conn.close()
        raise damaged(path, err) from None
    return conn


class Schema(Transactions):
    """Migrations and ``meta``; part of ``Store``."""

    path: str
    _db: Any
    _dim: str | None

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

    def _add_meta(self, key: str, amount: int) -> None:
        """Add to a counter in ``meta`` (inside the caller's transaction)."""
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
                         (key, str(amount), amount))

    def _forget_meta(self, *prefixes: str) -> None:
        """Delete the ``meta`` entries whose key starts with any of ``prefixes``."""
        for prefix in prefixes:
            self._db.execute("DELETE FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))

    def set_meta(self, key: str, value: str) -> None:
        with self._write():
            self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                             (key, value, value))

    def bind_model(self, name: str, dim: int, image_max_pixels: int | None = None) -> None:
        """Tie this index to a model and the pixels it reads images at (None: a text-only model); refuse another
        model's vectors, or another image budget's (re-index instead)."""
        stored_name, stored_dim = self._meta("model"), self._meta("dim")
        if stored_name is None:
            with self._write():
                self._db.execute("INSERT INTO meta(key, value) VALUES ('model', ?), ('dim', ?)", (name, str(dim)))
                self._create_vector_table(dim)  # type: ignore[attr-defined]  # vectors.py
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
