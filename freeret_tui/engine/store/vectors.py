"""The vectors: ``item_vectors`` (vec0, cosine, exact search), ``item_half`` (a float16 copy of each vector in a
plain table, fast to read in bulk or by id) and, once the index is large, the prefilter (engine/ann.py computes
it): ``bit_cells`` (k-means centroids) and ``item_bits`` (vec0 of sign bits partitioned by cell, each vector
filed in its two nearest cells, so a query reads only the cells nearest to it), whose Hamming candidates are
rescored exactly with ``item_half``. What an item is comes from catalog.py, through its methods.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from freeret_tui.engine import ann
from freeret_tui.engine.store.tx import Transactions
from freeret_tui.engine.types import Kind

# Below this many vectors exact search is fast enough; above it the prefilter answers. Measured at 1536-d on
# 2 cores (benchmarks/stage1_latency.py): exact 23.5 ms at 10k and 243 ms at 100k.
PREFILTER_MIN = 20_000
# Hamming candidates rescored exactly: at least PREFILTER_POOL, and PREFILTER_PER_HIT per wanted hit. Every probed
# cell returns that many rows from sqlite-vec and the best of them are read back in float16, so the pool sets the
# prefilter's cost; sign bits rank loosely where items are about two topics, so it also sets its recall there.
# At 100k vectors, default probes, pool 200 / 400 / 800 (benchmarks/stage1_peers.py, one run): recall@10 0.961 /
# 0.985 / 0.995 on the clean synthetic set (6.3 / 11.3 / 20.5 ms), 0.914 / 0.976 / 0.985 on items about two
# topics (4.8 / 9.0 / 18.2 ms), 0.942 / 0.952 / 0.954 on all-MiniLM text vectors (14.8 / 25.6 / 45.6 ms).
PREFILTER_POOL = 400
PREFILTER_PER_HIT = 4
# The cells are re-trained when the index has grown this many times over since they were: cells of a fixed count
# grow with the index, and each query's scan with them.
_REBUILD_GROWTH = 2
_BUILD_BATCH = 4096  # vectors read, quantised and written per step of a prefilter build
# What an index's prefilter tables look like; one built another way is rebuilt by the next ensure_prefilter.
_LAYOUT = "cells-v3"  # v3: bits and cells of unit vectors (v2 took them of the vectors as stored)


@dataclass(frozen=True)
class _Prefilter:
    """The prefilter as built: its version (a reader re-reads it when another process rebuilt it), the centre of
    the sign bits and the cell centroids."""

    version: str
    centre: np.ndarray
    centroids: np.ndarray
    assignments: int  # entries per vector in item_bits: entry = item id x assignments + slot


class Vectors(Transactions):
    """vec0 tables, float16 copies and the prefilter; part of ``Store``."""

    _db: Any
    _dim: str | None
    _prefilter: _Prefilter | None

    def _create_vector_table(self, dim: int | str) -> None:
        """The exact-search table, as wide as the model's hidden size (made when the first model binds)."""
        self._db.execute(
            f"CREATE VIRTUAL TABLE item_vectors USING vec0("
            f"item_id INTEGER PRIMARY KEY, embedding float[{int(dim)}] distance_metric=cosine, kind TEXT)"
        )

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

    def _remove_vector(self, item_id: int, keep: bool = False) -> bytes | None:
        """Delete an item's vector everywhere (inside the caller's transaction); ``keep``: return it first (the
        catalog trashes it). A point read of vec0 walks overflow pages (0.3 ms), so only when asked."""
        vector = None
        if keep:
            row = self._db.execute("SELECT embedding FROM item_vectors WHERE item_id = ?", (item_id,)).fetchone()
            vector = row[0] if row else None
        self._db.execute("DELETE FROM item_vectors WHERE item_id = ?", (item_id,))
        self._db.execute("DELETE FROM item_half WHERE item_id = ?", (item_id,))
        if self._prefilter is not None:
            first = item_id * self._prefilter.assignments
            self._db.execute("DELETE FROM item_bits WHERE entry BETWEEN ? AND ?",
                             (first, first + self._prefilter.assignments - 1))
        return vector

    def _vector_blobs(self, ids: Sequence[int]) -> dict[int, bytes]:
        """item id -> its float32 vector as stored (for content that shows up again under another path)."""
        if not ids:
            return {}
        rows = self._db.execute(
            f"SELECT item_id, embedding FROM item_vectors WHERE item_id IN ({', '.join('?' * len(ids))})", list(ids)
        )
        return {int(i): blob for i, blob in rows}

    def _rebuild_vector_table(self, live: set[int]) -> None:
        """Rewrite ``item_vectors`` with the vectors of ``live`` items only (gives back deleted rows' space)."""
        rows = [r for r in self._db.execute("SELECT item_id, embedding, kind FROM item_vectors") if r[0] in live]
        self._db.execute("DROP TABLE item_vectors")
        self._create_vector_table(int(self._dim or 0))
        for item_id, blob, kind in rows:
            self._db.execute("INSERT INTO item_vectors(item_id, embedding, kind) VALUES (?, ?, ?)",
                             (item_id, blob, kind))

    def _clear_vectors(self) -> None:
        self._db.execute("DELETE FROM item_half")
        self._db.execute("DROP TABLE IF EXISTS item_vectors")
        self._drop_prefilter()

    def prefilter_entries(self) -> int:
        """Entries filed in the prefilter's cells (each vector in up to two); 0 without a prefilter."""
        self._sync_prefilter()
        if self._prefilter is None:
            return 0
        return int(self._db.execute("SELECT COUNT(*) FROM item_bits").fetchone()[0])

    def vector_count(self) -> int:
        if self._dim is None:
            return 0
        return self.item_count()  # type: ignore[attr-defined]  # catalog.py: one vector per item

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
        self._forget_meta("prefilter_", "bit_centre")  # type: ignore[attr-defined]  # schema.py

    def build_prefilter(self) -> None:
        """(Re)build the prefilter: centre = mean of a sample, cells = k-means of that sample, then every vector's
        cell and sign bits. One transaction: readers keep the old prefilter until it commits.

        Vectors are read from ``item_half``; the bits go in cell by cell: vec0 keeps a partly filled chunk per
        cell, and inserting in vector order touched a different chunk each time (the cache spilled to the WAL and
        a 1M build did not finish in 10 min)."""
        if self._dim is None:
            return
        with self._write():
            self._fill_half()
            count = self.vector_count()
            sample = self._halves([b for (b,) in self._db.execute(
                # A spread-out sample in an order fixed by the ids (Knuth's multiplicative hash), not random():
                # the same index trains the same cells, so recall does not vary from build to build.
                "SELECT vector FROM item_half ORDER BY (item_id * 2654435761) % 4294967296 LIMIT ?",
                (ann.training_size(count),),
            )])
            centre = ann.centre_of(sample) if len(sample) else np.zeros(int(self._dim), np.float32)
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
            rows = self._db.execute("SELECT item_id, vector FROM item_half")
            while batch := list(islice(rows, _BUILD_BATCH)):
                vectors = self._halves([r[1] for r in batch])
                kind_of = self.kinds_of([int(r[0]) for r in batch])  # type: ignore[attr-defined]  # catalog.py
                ids += [int(r[0]) for r in batch]
                kinds += [kind_of[int(r[0])] for r in batch]
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

    def ensure_prefilter(self, minimum: int | None = None) -> bool:
        """Build the prefilter once the index reaches ``minimum`` vectors (PREFILTER_MIN, read at each call), and
        again each time it has grown ``_REBUILD_GROWTH`` times over (amortised: the rebuilds of an index grown to
        n cost about 2n vector writes in all), or when it was built in an older layout. True when one exists."""
        if self._dim is None:
            return False
        minimum = PREFILTER_MIN if minimum is None else minimum
        self._sync_prefilter()
        count = self.vector_count()
        built_for = int(self._meta("prefilter_size") or 0)
        if (self._prefilter is None and count >= minimum) or (
            self._prefilter is not None and count >= _REBUILD_GROWTH * max(built_for, minimum)
        ):
            self.build_prefilter()
        return self._prefilter is not None

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
        with self._write():  # one read snapshot: a rebuild committed meanwhile is seen whole or not at all
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
