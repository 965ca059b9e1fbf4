"""Write transactions on the index's one connection: named savepoints that nest (a batch's transaction holds each
file's writes), and stay correct when SQLite itself has already rolled everything back. It does that on a full
disk (SQLITE_FULL) and some I/O errors; apsw's ``with connection:`` then tried to roll back to a savepoint that
no longer existed and raised three chained errors instead of the one that mattered. A full disk comes out as
``DiskFullError``: one sentence, with nothing of the failed transaction written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from freeret_tui.errors import StoreError


class DiskFullError(StoreError):
    """The disk holding the index has no room for a write; the write was rolled back whole."""


def disk_full(path: str) -> DiskFullError:
    return DiskFullError(f"the disk holding the index {path} is full: nothing of the last change was written",
                         ["free some space on that disk and try again (files not yet indexed stay queued; a running daemon retries "
                          "on its own)"])


class Transactions:
    """``_write()``; part of ``Store`` (every seam writes through it)."""

    path: str
    _db: Any
    _depth: int = 0

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One atomic unit of writes; nested units are savepoints inside the outermost, which commits."""
        name = f"freeret_{self._depth}"
        self._db.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException as err:
            self._depth -= 1
            self._undo(name)
            if isinstance(err, apsw.FullError):
                raise disk_full(self.path) from None
            raise
        self._depth -= 1
        try:
            self._db.execute(f"RELEASE {name}")  # the outermost release is the commit, which can find the disk full
        except apsw.Error as err:
            self._undo(name)
            if isinstance(err, apsw.FullError):
                raise disk_full(self.path) from None
            raise

    def _undo(self, name: str) -> None:
        """Roll back to ``name`` and drop it, unless SQLite already ended the whole transaction itself."""
        if self._db.in_transaction:
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
