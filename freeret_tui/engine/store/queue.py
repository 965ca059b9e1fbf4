"""The daemon's persistent work queue (a path is dequeued in the transaction that stores its result, so a killed
daemon loses nothing) and the watched roots (online or not, last full scan)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from freeret_tui.engine.store.paths import path_key, path_text
from freeret_tui.engine.store.tx import Transactions


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class Queue(Transactions):
    """``queue`` and ``roots``; part of ``Store``."""

    _db: Any

    def enqueue(self, entries: Iterable[tuple[Path, Path]], due: float) -> None:
        """Queue (root, path) pairs to be looked at from ``due`` on; a path queued again waits for the later time
        (that is the debounce: a burst of events on one file is handled once, after it settles)."""
        with self._write():
            for root, path in entries:
                self._db.execute(
                    "INSERT INTO queue(path, root, due, mtime) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET due = MAX(due, excluded.due), root = excluded.root, "
                    "mtime = excluded.mtime",
                    (path_key(path), path_key(root), due, _mtime(path)),
                )

    def due(self, now: float, limit: int) -> list[tuple[Path, Path, float]]:
        """(root, path, due) of queued paths that are due: removals first, then the newest files (a person's
        recent photos and notes are the ones they look for first), whatever order they were found in."""
        rows = self._db.execute(
            "SELECT root, path, due FROM queue WHERE due <= ? ORDER BY mtime IS NOT NULL, mtime DESC, due LIMIT ?",
            (now, limit))
        return [(Path(path_text(r)), Path(path_text(p)), float(d)) for r, p, d in rows]

    def dequeue(self, path: Path, due: float) -> None:
        """Done with ``path`` as queued at ``due``; a newer event queued meanwhile stays."""
        self._db.execute("DELETE FROM queue WHERE path = ? AND due <= ?", (path_key(path), due))

    def queue_length(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(due) FROM queue").fetchone()
        return None if row[0] is None else float(row[0])

    def set_root(self, root: Path, online: bool, scanned_at: float | None = None) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO roots(path, online, scanned_at) VALUES (?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "online = excluded.online, scanned_at = COALESCE(excluded.scanned_at, scanned_at)",
                (path_key(root), int(online), scanned_at),
            )

    def roots(self) -> list[tuple[Path, bool, float | None]]:
        """(folder, online, last full scan) for every watched root."""
        rows = self._db.execute("SELECT path, online, scanned_at FROM roots ORDER BY path")
        return [(Path(path_text(p)), bool(o), s) for p, o, s in rows]
