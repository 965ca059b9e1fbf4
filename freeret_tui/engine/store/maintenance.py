"""Maintenance: an integrity check, then the vector tables rebuilt and the file vacuumed to give back what
deletions left (the daemon must not run meanwhile)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freeret_tui.engine.store.schema import damaged, rebuild_steps
from freeret_tui.engine.store.tx import DiskFullError, Transactions


class Maintenance(Transactions):
    """``freeret-tui maintenance``; part of ``Store``."""

    path: str
    _db: Any
    _dim: str | None

    def maintenance(self) -> dict[str, object]:
        """Integrity check, then rebuild the vector tables and VACUUM to give back the space deletions left. A
        damaged index is reported (its problems as text) and left as it is: rewriting it could lose more."""
        import apsw

        try:
            problems = [str(r[0]) for r in self._db.execute("PRAGMA integrity_check")]
        except (apsw.CorruptError, apsw.NotADBError) as err:
            raise damaged(self.path, err) from None
        size_before = self._bytes_on_disk()
        if problems != ["ok"]:
            return {"integrity": problems, "orphan_fts_rows_removed": 0, "bytes_before": size_before,
                    "bytes_after": size_before, "next_steps": rebuild_steps(self.path)}
        with self._write():
            orphans = self._drop_orphan_fts()
            if self._dim is not None:
                self._rebuild_vector_table(self.live_item_ids())
        if self._dim is not None and self._prefilter is not None:
            self.build_prefilter()
        try:
            self._db.execute("VACUUM")  # writes a new copy of the whole index before it lets go of the old one
        except apsw.FullError:
            raise DiskFullError(f"not enough free space beside the index {self.path} to compact it (that takes up "
                                "to its own size again); the index is intact",
                                ["free some space on that disk, then run `freeret-tui maintenance` again"]) from None
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
