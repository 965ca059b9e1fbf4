"""The prefilter's tables (engine/ann.py computes what goes in them): ``bit_cells`` (the k-means centroids),
``bit_blocks`` (each cell's entries in blocks of ``BLOCK``, the last of a cell padded: one blob of item ids, the two
factors of ``ann.sign_codes`` and the sign bits, word-major (``_pack``), and one of kind codes) and ``bit_members``
(the blocks an item is filed in, so that its removal rewrites only those).

A query reads the blocks of its probed cells straight into one array (``_read_blobs``) and ranks their entries in
NumPy: by Hamming distance, one pass per 64-bit word over every block, then the closest of those by
``ann.estimate``. Until layout blocks-v1 the bits sat in a vec0 table partitioned by cell, whose KNN returned
``pool`` rows from every probed cell at ~4 µs a row: 4.4 ms of an 8.8 ms query at 100k vectors (3 cells, pool 400);
reading the same cells' blocks and counting their bits costs 0.5 ms (measured with a throwaway profile of the two
layouts on benchmarks/stage1_peers.py's mixed set). blocks-v1 kept ids, bits and factors in three blobs, the bits
row-major, fetched through a query: on 1M MiniLM vectors (58,883 entries read a query, a throwaway profile)
fetching the rows took 0.83 ms, joining the blobs 0.71 and counting bits 1.44 of a 4.6 ms query; in this layout
reading 65k entries took 0.52 ms and counting 0.49 (2.5 ms a query; same probes and pool).
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
# Of those, only entries whose estimate plus its error bound (``ann.error_bounds`` at this epsilon: RaBitQ's 1.9)
# reaches the wanted-th best item's estimate less its bound are rescored, up to the pool; 0 rescores the whole
# pool. Where a query's neighbours stand out the pool shrinks to a few dozen; where estimates are flat it keeps most.
# benchmarks/stage1_peers.py, the defaults without and with it in one run: clean 1.66 -> 1.22 ms at 100k, 1.93 ->
# 1.44 at 1M; items about two topics and MiniLM's text vectors within 0.09 ms either way; recall the same on all
# six sets. Throwaway runs: rescored a median of 16 at clean 100k, a mean of 161 of 200 at mix 100k and 176 at
# MiniLM 1M; epsilon 1.5 cut MiniLM 1M to 140 (same recall), 1.0 to 69 but lost recall (0.959 -> 0.946).
BOUND_EPSILON = 1.9
# Entries per block: an append or a removal rewrites one block, ~53 KB at 1536-d (192 bytes of bits, 8 of id, 8 of
# factors, 1 of kind per entry), which fits one of the index's 64 KiB pages; a query reads a cell of ~2,000
# entries in ~8 rows.
BLOCK = 256
# What an index's prefilter tables look like; one built another way is rebuilt by the next ensure_prefilter.
# v2: one word-major blob a block; v1: ids, bits and factors in three blobs, row-major; cells-v3: vec0 bits
# partitioned by cell, of unit vectors.
LAYOUT = "blocks-v2"
# A block stores each entry's kind as one byte. Fixed here (not taken from the enum's order), since the codes
# are on disk.
_KIND_CODES = {"text": 0, "image": 1, "page": 2}


@dataclass(frozen=True)
class PrefilterState:
    """The prefilter as built: its version (a reader re-reads it when another process rebuilt it), the centre of
    the sign bits, the cell centroids and how many entries a block holds."""

    version: str
    centre: np.ndarray
    centroids: np.ndarray
    block: int

    @property
    def words(self) -> int:
        """64-bit words of sign bits per entry."""
        return -(-len(self.centre) // 64)


def _pack(ids: np.ndarray, factors: np.ndarray, words: np.ndarray, block: int) -> np.ndarray:
    """Entries as a block stores them: a (2 + words, block) uint64 matrix, row 0 the item ids, row 1 each entry's
    two float32 factors, then row 2 + w the w-th word of every entry's sign bits; zero past the entries (item id 0
    is never an item's: ids start at 1)."""
    matrix = np.zeros((2 + words.shape[1], block), dtype=np.uint64)
    matrix[0, : len(ids)] = np.asarray(ids, dtype=np.int64).view(np.uint64)
    matrix[1, : len(ids)] = np.ascontiguousarray(factors, dtype=np.float32).view(np.uint64)[:, 0]
    matrix[2:, : len(ids)] = words.T
    return matrix


def _kind_row(codes: np.ndarray, block: int) -> bytes:
    """Kind codes as a block stores them: one byte an entry, zero past the entries."""
    row = np.zeros(block, dtype=np.uint8)
    row[: len(codes)] = codes
    return row.tobytes()


def block_ids(blob: bytes, size: int) -> np.ndarray:
    """The item ids a block's ``entries`` blob holds (the first ``size`` words of its first row)."""
    return np.frombuffer(blob, dtype=np.int64, count=size)


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
        self._prefilter = PrefilterState(version, centre, centroids, int(self._meta("prefilter_block") or BLOCK))

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
        """Empty tables for a prefilter of these cells (inside the caller's transaction, after ``_drop_prefilter``).
        The index on (cell, size) holds all a query needs to find its blocks (the rowid is the block)."""
        self._db.execute("CREATE TABLE bit_cells (cell INTEGER PRIMARY KEY, centroid BLOB NOT NULL)")
        self._db.execute("CREATE TABLE bit_blocks (block INTEGER PRIMARY KEY, cell INTEGER NOT NULL, "
                         "size INTEGER NOT NULL, entries BLOB NOT NULL, kinds BLOB NOT NULL)")
        self._db.execute("CREATE INDEX bit_blocks_cell ON bit_blocks(cell, size)")
        self._db.execute("CREATE TABLE bit_members (item_id INTEGER PRIMARY KEY, blocks BLOB NOT NULL)")
        for cell, centroid in enumerate(centroids):
            self._db.execute("INSERT INTO bit_cells(cell, centroid) VALUES (?, ?)", (cell, centroid.tobytes()))
        self.set_meta("prefilter_block", str(BLOCK))  # type: ignore[attr-defined]  # schema.py; what _file_all writes

    def _file_all(self, ids: np.ndarray, kinds: Sequence[str], vectors_cells: np.ndarray, bits: np.ndarray,
                  factors: np.ndarray) -> None:
        """File a whole index at once (a build): ``vectors_cells`` (n, assignments) from ``ann.assign``, ``bits``
        and ``factors`` from ``ann.sign_codes``. Blocks of ``BLOCK`` entries (``_create_prefilter`` recorded that
        number) are written full, cell after cell."""
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
                    "INSERT INTO bit_blocks(block, cell, size, entries, kinds) VALUES (?, ?, ?, ?, ?)",
                    (block, int(cells[entries[0]]), len(rows),
                     _pack(ids[rows], factors[rows], bits[rows], BLOCK).tobytes(), _kind_row(codes[rows], BLOCK)),
                )
                block_of[entries] = block
                block += 1
        blocks = block_of.reshape(-1, width)
        self._db.executemany("INSERT INTO bit_members(item_id, blocks) VALUES (?, ?)",
                             ((int(i), b.tobytes()) for i, b in zip(ids, blocks, strict=True)))

    def _file_one(self, item_id: int, vector: np.ndarray, kind: str) -> None:
        """File a new vector in its cells: into the fullest block of each with room, or a new block."""
        state = self._prefilter
        if state is None:
            return
        words, factors = ann.sign_codes(vector, state.centre)
        alone = _pack(np.array([item_id]), factors, words, state.block)  # a block holding just this entry
        code = _KIND_CODES[kind]
        blocks = []
        for cell in ann.assign(vector, state.centre, state.centroids)[0]:
            row = self._db.execute(
                "SELECT block, size, entries, kinds FROM bit_blocks WHERE cell = ? AND size < ? "
                "ORDER BY size DESC LIMIT 1", (int(cell), state.block)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO bit_blocks(cell, size, entries, kinds) VALUES (?, 1, ?, ?)",
                                 (int(cell), alone.tobytes(), _kind_row(np.array([code]), state.block)))
                blocks.append(int(self._db.last_insert_rowid()))
                continue
            block, size, blob, kind_blob = row
            matrix = np.frombuffer(blob, dtype=np.uint64).reshape(alone.shape).copy()
            matrix[:, size] = alone[:, 0]
            codes = bytearray(kind_blob)
            codes[size] = code
            self._db.execute("UPDATE bit_blocks SET size = size + 1, entries = ?, kinds = ? WHERE block = ?",
                             (matrix.tobytes(), bytes(codes), block))
            blocks.append(int(block))
        self._db.execute("INSERT INTO bit_members(item_id, blocks) VALUES (?, ?)",
                         (item_id, np.array(blocks, dtype=np.int64).tobytes()))
        self._add_meta("prefilter_written", 1)  # type: ignore[attr-defined]  # schema.py; reset by each build

    def prefilter_written(self) -> int:
        """Vectors filed one by one since the prefilter was built (what decides its next build)."""
        return int(self._meta("prefilter_written") or 0)

    def _unfile(self, item_id: int) -> None:
        """Take an item out of the blocks it is filed in (the entries after it move up; a block left empty
        goes)."""
        state = self._prefilter
        if state is None:
            return
        row = self._db.execute("SELECT blocks FROM bit_members WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            return
        for block in np.frombuffer(row[0], dtype=np.int64).tolist():
            size, blob, kind_blob = self._db.execute(
                "SELECT size, entries, kinds FROM bit_blocks WHERE block = ?", (block,)).fetchone()
            matrix = np.frombuffer(blob, dtype=np.uint64).reshape(2 + state.words, state.block)
            keep = np.flatnonzero(matrix[0, :size].view(np.int64) != item_id)
            if not len(keep):
                self._db.execute("DELETE FROM bit_blocks WHERE block = ?", (block,))
                continue
            kept = np.zeros_like(matrix)
            kept[:, : len(keep)] = matrix[:, keep]
            self._db.execute(
                "UPDATE bit_blocks SET size = ?, entries = ?, kinds = ? WHERE block = ?",
                (len(keep), kept.tobytes(), _kind_row(np.frombuffer(kind_blob, dtype=np.uint8)[keep], state.block),
                 block))
        self._db.execute("DELETE FROM bit_members WHERE item_id = ?", (item_id,))

    def _read_blobs(self, table: str, column: str, rowids: Sequence[int], out: np.ndarray) -> None:
        """The ``column`` blob of each of ``table``'s rows ``rowids`` into the next row of ``out``, each blob as
        long as a row of ``out``, straight from SQLite's (memory-mapped) pages into the array. One blob handle moved
        from row to row (opening one compiles a statement): 0.47 ms for 317 blocks of 16 KB, against 1.65 ms to
        fetch them as bytes through a query (a throwaway timing on 1M MiniLM vectors)."""
        row_bytes = out.nbytes // len(rowids)
        with self._db.blob_open("main", table, column, rowids[0], False) as blob:
            for at, rowid in enumerate(rowids):
                blob.reopen(rowid)
                blob.read_into(out, at * row_bytes, row_bytes)

    def _nearest_by_bits(self, state: PrefilterState, vector: np.ndarray, pool: int,
                         kinds: Sequence[str], hits: int) -> list[int]:
        """Up to ``pool`` item ids from the probed cells, best estimated first (an item met in two of them counts
        once), only those that may still be among the best ``hits`` within the estimate's error bound; only items
        of ``kinds`` if any are given."""
        point = ann.centred(vector, state.centre)
        cells = ann.probe(point, state.centroids)
        found = self._db.execute(
            f"SELECT block, size FROM bit_blocks WHERE cell IN ({', '.join('?' * len(cells))})", cells).fetchall()
        if not found:
            return []
        blocks = [int(b) for b, _ in found]
        entries = np.empty((len(blocks), 2 + state.words, state.block), dtype=np.uint64)
        self._read_blobs("bit_blocks", "entries", blocks, entries)
        live = np.arange(state.block) < np.array([s for _, s in found])[:, None]  # (blocks, block): not padding
        if kinds:
            codes = np.empty((len(blocks), state.block), dtype=np.uint8)
            self._read_blobs("bit_blocks", "kinds", blocks, codes)
            live &= np.isin(codes, [_KIND_CODES[k] for k in kinds])
        # Hamming distance over every entry read, then the estimate over the closest.
        shortlist = _ESTIMATED_PER_ITEM * pool
        if np.count_nonzero(live) > shortlist:
            distances = ann.hamming(entries[:, 2:].transpose(1, 0, 2), ann.sign_bits(point))
            distances[~live] = np.iinfo(np.int32).max
            picked = np.argpartition(distances.ravel(), shortlist)[:shortlist]
        else:
            picked = np.flatnonzero(live)
        # An item filed in two of the probed cells may be picked twice, with one code: each item once from here on.
        picked = picked[np.unique(entries[picked // state.block, 0, picked % state.block], return_index=True)[1]]
        # The picked entries word-major (2 + words, picked): ids, factors, then the bits, as ``ann.estimate`` takes.
        chosen = np.ascontiguousarray(entries[picked // state.block, :, picked % state.block].T)
        factors = chosen[1].view(np.float32).reshape(-1, 2)
        estimates = ann.estimate(chosen[2:], factors, point)
        kept = np.arange(len(picked))
        if BOUND_EPSILON and len(picked) > hits:
            # Only items that may still beat the hits-th best: its lower bound against each one's upper.
            bounds = ann.error_bounds(factors, point, state.centre, BOUND_EPSILON)
            lower = estimates - bounds
            floor = np.partition(lower, len(lower) - hits)[len(lower) - hits]
            kept = np.flatnonzero(estimates + bounds >= floor)
        best = kept[np.argsort(-estimates[kept], kind="stable")[:pool]]
        return chosen[0, best].view(np.int64).tolist()
