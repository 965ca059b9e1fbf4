"""The prefilter's tables (engine/ann.py computes what goes in them): ``bit_cells`` (the k-means centroids),
``bit_blocks`` (each cell's entries in blocks of up to ``BLOCK`` rows: item ids, kind codes, sign bits and the
two factors of ``ann.sign_codes``, each as one blob) and ``bit_members`` (the blocks an item is filed in, so that
its removal rewrites only those).

A query reads the blocks of its probed cells whole and ranks their entries in NumPy: by Hamming distance, then
the closest of those by ``ann.estimate``. Until this layout the bits sat in a vec0 table partitioned by cell,
whose KNN returned ``pool`` rows from every probed cell at ~4 µs a row: 4.4 ms of an 8.8 ms query at 100k vectors
(3 cells, pool 400); reading the same cells' blocks and counting their bits costs 0.5 ms (measured with a
throwaway profile of the two layouts on benchmarks/stage1_peers.py's mixed set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from freeret_tui.engine import ann
from freeret_tui.engine.store.tx import Transactions

# Entries ranked by ``ann.estimate`` per item wanted, the closest by Hamming distance; at least 2, since an item
# has up to two entries and the shortlist must hold ``pool`` items. 800 for 200 (100k vectors, items about two
# topics) gave the same recall as estimating every entry of the probed cells (~6,400); the estimate costs ~5x the
# Hamming count per entry.
_ESTIMATED_PER_ITEM = 4
# Entries per block: an append or a removal rewrites one block, ~53 KB at 1536-d (192 bytes of bits, 8 of id, 8 of
# factors, 1 of kind per entry), which fits one of the index's 64 KiB pages; a query reads a cell of ~2,000
# entries in ~8 rows.
BLOCK = 256
# What an index's prefilter tables look like; one built another way is rebuilt by the next ensure_prefilter.
LAYOUT = "blocks-v1"  # v1: bits in blocks read whole; cells-v3: vec0 bits partitioned by cell, of unit vectors
# A block stores each entry's kind as one byte. Fixed here (not taken from the enum's order), since the codes
# are on disk.
_KIND_CODES = {"text": 0, "image": 1, "page": 2}


@dataclass(frozen=True)
class PrefilterState:
    """The prefilter as built: its version (a reader re-reads it when another process rebuilt it), the centre of
    the sign bits and the cell centroids."""

    version: str
    centre: np.ndarray
    centroids: np.ndarray


class Prefilter(Transactions):
    """Cells, blocks and members; part of ``Store`` through ``Vectors``."""

    _db: Any
    _prefilter: PrefilterState | None

    def _sync_prefilter(self) -> None:
        """Load the prefilter's centre and centroids if they are not the ones in the database (first open, or
        another process built or rebuilt it since). One meta read when nothing changed."""
        version = self._meta("prefilter_version")
        if version is None or self._meta("prefilter_layout") != LAYOUT:
            self._prefilter = None  # none yet, or an older layout that the next ensure_prefilter replaces
            return
        if self._prefilter is not None and self._prefilter.version == version:
            return
        centre = np.frombuffer(bytes.fromhex(self._meta("bit_centre") or ""), dtype=np.float32)
        blobs = [b for (b,) in self._db.execute("SELECT centroid FROM bit_cells ORDER BY cell")]
        centroids = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
        self._prefilter = PrefilterState(version, centre, centroids)

    @property
    def prefilter_cells(self) -> int:
        """Cells of the prefilter; 0 while the index is small enough for exact search."""
        self._sync_prefilter()
        return 0 if self._prefilter is None else len(self._prefilter.centroids)

    def prefilter_entries(self) -> int:
        """Entries filed in the prefilter's cells (each vector in up to two); 0 without a prefilter."""
        self._sync_prefilter()
        if self._prefilter is None:
            return 0
        return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM bit_blocks").fetchone()[0])

    def _drop_prefilter(self) -> None:
        # item_bits: the vec0 table of layout cells-v3, dropped when an index of that layout is rebuilt.
        for table in ("item_bits", "bit_blocks", "bit_members", "bit_cells"):
            self._db.execute(f"DROP TABLE IF EXISTS {table}")
        self._forget_meta("prefilter_", "bit_centre")  # type: ignore[attr-defined]  # schema.py

    def _create_prefilter(self, centre: np.ndarray, centroids: np.ndarray) -> None:
        """Empty tables for a prefilter of these cells (inside the caller's transaction, after ``_drop_prefilter``)."""
        self._db.execute("CREATE TABLE bit_cells (cell INTEGER PRIMARY KEY, centroid BLOB NOT NULL)")
        self._db.execute("CREATE TABLE bit_blocks (block INTEGER PRIMARY KEY, cell INTEGER NOT NULL, "
                         "size INTEGER NOT NULL, ids BLOB NOT NULL, kinds BLOB NOT NULL, bits BLOB NOT NULL, "
                         "factors BLOB NOT NULL)")
        self._db.execute("CREATE INDEX bit_blocks_cell ON bit_blocks(cell, size)")
        self._db.execute("CREATE TABLE bit_members (item_id INTEGER PRIMARY KEY, blocks BLOB NOT NULL)")
        for cell, centroid in enumerate(centroids):
            self._db.execute("INSERT INTO bit_cells(cell, centroid) VALUES (?, ?)", (cell, centroid.tobytes()))

    def _file_all(self, ids: np.ndarray, kinds: Sequence[str], vectors_cells: np.ndarray, bits: np.ndarray,
                  factors: np.ndarray) -> None:
        """File a whole index at once (a build): ``vectors_cells`` (n, assignments) from ``ann.assign``, ``bits``
        and ``factors`` from ``ann.sign_codes``. Blocks are written full, cell after cell."""
        if not len(ids):
            return
        width = vectors_cells.shape[1]
        codes = np.array([_KIND_CODES[k] for k in kinds], dtype=np.uint8)
        cells = vectors_cells.ravel()  # entry e: vector e // width, its slot e % width
        order = np.argsort(cells, kind="stable")
        block_of = np.empty(len(cells), dtype=np.int64)
        bounds = np.flatnonzero(np.diff(cells[order])) + 1
        block = 0
        for run in np.split(order, bounds):
            for start in range(0, len(run), BLOCK):
                entries = run[start : start + BLOCK]
                rows = entries // width
                self._db.execute(
                    "INSERT INTO bit_blocks(block, cell, size, ids, kinds, bits, factors) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (block, int(cells[entries[0]]), len(rows), ids[rows].tobytes(), codes[rows].tobytes(),
                     bits[rows].tobytes(), factors[rows].tobytes()),
                )
                block_of[entries] = block
                block += 1
        blocks = block_of.reshape(-1, width)
        self._db.executemany("INSERT INTO bit_members(item_id, blocks) VALUES (?, ?)",
                             ((int(i), b.tobytes()) for i, b in zip(ids, blocks, strict=True)))

    def _file_one(self, item_id: int, vector: np.ndarray, kind: str) -> None:
        """File a new vector in its cells: appended to the fullest block of each with room, or a new block."""
        state = self._prefilter
        if state is None:
            return
        words, factor_rows = ann.sign_codes(vector, state.centre)
        bits, factors = words[0].tobytes(), factor_rows[0].tobytes()
        code = bytes([_KIND_CODES[kind]])
        blocks = []
        for cell in ann.assign(vector, state.centre, state.centroids)[0]:
            row = self._db.execute(
                "SELECT block, ids, kinds, bits, factors FROM bit_blocks WHERE cell = ? AND size < ? "
                "ORDER BY size DESC LIMIT 1", (int(cell), BLOCK)).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO bit_blocks(cell, size, ids, kinds, bits, factors) VALUES (?, 1, ?, ?, ?, ?)",
                    (int(cell), np.int64(item_id).tobytes(), code, bits, factors))
                blocks.append(int(self._db.last_insert_rowid()))
                continue
            block, ids, kinds, old_bits, old_factors = row
            self._db.execute(
                "UPDATE bit_blocks SET size = size + 1, ids = ?, kinds = ?, bits = ?, factors = ? WHERE block = ?",
                (ids + np.int64(item_id).tobytes(), kinds + code, old_bits + bits, old_factors + factors, block))
            blocks.append(int(block))
        self._db.execute("INSERT INTO bit_members(item_id, blocks) VALUES (?, ?)",
                         (item_id, np.array(blocks, dtype=np.int64).tobytes()))
        self._add_meta("prefilter_written", 1)  # type: ignore[attr-defined]  # schema.py; reset by each build

    def prefilter_written(self) -> int:
        """Vectors filed one by one since the prefilter was built (what decides its next build)."""
        return int(self._meta("prefilter_written") or 0)

    def _unfile(self, item_id: int) -> None:
        """Take an item out of the blocks it is filed in (a block left empty goes)."""
        if self._prefilter is None:
            return
        row = self._db.execute("SELECT blocks FROM bit_members WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            return
        for block in np.frombuffer(row[0], dtype=np.int64).tolist():
            size, ids_blob, kinds, bits_blob, factors = self._db.execute(
                "SELECT size, ids, kinds, bits, factors FROM bit_blocks WHERE block = ?", (block,)).fetchone()
            ids = np.frombuffer(ids_blob, dtype=np.int64)
            keep = ids != item_id
            if not keep.any():
                self._db.execute("DELETE FROM bit_blocks WHERE block = ?", (block,))
                continue
            bits = np.frombuffer(bits_blob, dtype=np.uint8).reshape(size, -1)
            self._db.execute(
                "UPDATE bit_blocks SET size = ?, ids = ?, kinds = ?, bits = ?, factors = ? WHERE block = ?",
                (int(keep.sum()), ids[keep].tobytes(), np.frombuffer(kinds, dtype=np.uint8)[keep].tobytes(),
                 bits[keep].tobytes(), np.frombuffer(factors, dtype=np.float32).reshape(size, 2)[keep].tobytes(),
                 block))
        self._db.execute("DELETE FROM bit_members WHERE item_id = ?", (item_id,))

    def _nearest_by_bits(self, state: PrefilterState, vector: np.ndarray, pool: int,
                         kinds: Sequence[str]) -> list[int]:
        """Up to ``pool`` item ids from the probed cells, best estimated first (an item met in two of them counts
        once); only items of ``kinds`` if any are given."""
        cells = ann.probe(vector, state.centre, state.centroids)
        rows = self._db.execute(
            f"SELECT ids, kinds, bits, factors FROM bit_blocks WHERE cell IN ({', '.join('?' * len(cells))})", cells
        ).fetchall()
        if not rows:
            return []
        query_words = ann.sign_codes(vector, state.centre)[0][0]
        ids = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.int64)
        words = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.uint64).reshape(len(ids), len(query_words))
        factors = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(len(ids), 2)
        if kinds:
            wanted = np.isin(np.frombuffer(b"".join(r[1] for r in rows), dtype=np.uint8),
                             [_KIND_CODES[k] for k in kinds])
            ids, words, factors = ids[wanted], words[wanted], factors[wanted]
        # Hamming distance over every entry read, then the estimate over the closest.
        shortlist = _ESTIMATED_PER_ITEM * pool
        if len(ids) > shortlist:
            closest = np.argpartition(ann.hamming(words, query_words), shortlist)[:shortlist]
            ids, words, factors = ids[closest], words[closest], factors[closest]
        ranked = ids[np.argsort(-ann.estimate(words, factors, vector, state.centre), kind="stable")]
        _, first = np.unique(ranked, return_index=True)
        return ranked[np.sort(first)][:pool].tolist()
