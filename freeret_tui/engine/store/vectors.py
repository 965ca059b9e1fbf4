"""The vectors: ``item_vectors`` (vec0, cosine, exact search), ``item_half`` (a float16 copy of each vector in a
plain table, fast to read in bulk or by id), and when the prefilter is built and used: its cells, trained here
on ``item_half``, filed in prefilter.py's tables, and its Hamming candidates rescored exactly with ``item_half``.
What an item is comes from catalog.py, through its methods.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import numpy as np

from freeret_tui.engine import ann
from freeret_tui.engine.store.prefilter import LAYOUT, Prefilter, PrefilterState
from freeret_tui.engine.types import Kind

# Below this many vectors exact search is fast enough; above it the prefilter answers. Measured at 1536-d on
# 2 cores (benchmarks/stage1_latency.py): exact 23.5 ms at 10k and 243 ms at 100k.
PREFILTER_MIN = 20_000
# Candidates rescored exactly: at least PREFILTER_POOL, and PREFILTER_PER_HIT per wanted hit. Each is one float16
# row read back and converted (~5 µs a row at 1536-d), so the pool sets much of the prefilter's cost; how well
# the estimate ranks (ann.estimate) sets how small it can be. At 100k vectors, default probes, pool 100 / 200 /
# 400 (benchmarks/stage1_peers.py, one run): recall@10 0.967 / 0.990 / 0.997 on the clean synthetic set (1.36 /
# 1.97 / 3.18 ms), 0.930 / 0.971 / 0.984 on items about two topics (1.35 / 1.93 / 3.14 ms), 0.973 / 0.984 /
# 0.986 on all-MiniLM text vectors (2.61 / 2.94 / 3.63 ms).
PREFILTER_POOL = 200
PREFILTER_PER_HIT = 4
_BUILD_BATCH = 4096  # vectors read, quantised and written per step of a prefilter build
# float16 bits placed in a float32's fields come out 2^-112 times their value (the exponents' biases are 15 and
# 127), subnormals included; multiplying by this puts them back, exactly.
_HALF_BIAS = np.float32(2.0**112)


def widen(halves: np.ndarray) -> np.ndarray:
    """float16 to float32, bit for bit as ``astype`` (every finite value; tests/test_store_scale.py), in integer
    passes: on a CPU where NumPy converts float16 without vector instructions (an AMD EPYC with AVX2 and F16C, no
    AVX-512), 200 rows of 1536 took 0.80 ms with ``astype`` and 0.25 ms so (a throwaway micro-benchmark), the
    largest single cost of a query there."""
    bits = halves.view(np.uint16).astype(np.uint32)
    sign = bits & 0x8000
    bits ^= sign
    bits <<= 13
    sign <<= 16
    bits |= sign
    out = bits.view(np.float32)
    out *= _HALF_BIAS
    return out


class Vectors(Prefilter):
    """vec0 tables, float16 copies and the prefilter's build and search; part of ``Store``."""

    _db: Any
    _dim: str | None
    _prefilter: PrefilterState | None

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
        self._file_one(item_id, vector, kind)

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
        self._unfile(item_id)
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

    def vector_count(self) -> int:
        if self._dim is None:
            return 0
        return self.item_count()  # type: ignore[attr-defined]  # catalog.py: one vector per item

    def build_prefilter(self) -> None:
        """(Re)build the prefilter: centre = mean of a sample, cells = k-means of that sample, then every vector's
        cells and sign bits, filed cell by cell in full blocks. One transaction: readers keep the old prefilter
        until it commits."""
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
            self._create_prefilter(centre, centroids)
            ids: list[int] = []
            kinds: list[str] = []
            cells: list[np.ndarray] = []
            bits: list[np.ndarray] = []  # 192 bytes a vector at 1536-d: 200 MB at 1M, for the cell-order writes
            factors: list[np.ndarray] = []
            rows = self._db.execute("SELECT item_id, vector FROM item_half")
            while batch := list(islice(rows, _BUILD_BATCH)):
                vectors = self._halves([r[1] for r in batch])
                kind_of = self.kinds_of([int(r[0]) for r in batch])  # type: ignore[attr-defined]  # catalog.py
                ids += [int(r[0]) for r in batch]
                kinds += [kind_of[int(r[0])] for r in batch]
                cells.append(ann.assign(vectors, centre, centroids))
                words, factor_rows = ann.sign_codes(vectors, centre)
                bits.append(words)
                factors.append(factor_rows)
            if ids:
                self._file_all(np.array(ids, dtype=np.int64), kinds, np.concatenate(cells), np.concatenate(bits),
                               np.concatenate(factors))
            # A fresh version each build (a counter would restart after `reset` and fool a reader holding the old).
            for key, value in (("bit_centre", centre.astype(np.float32).tobytes().hex()),
                               ("prefilter_size", str(count)), ("prefilter_layout", LAYOUT),
                               ("prefilter_version", str(time.time_ns()))):
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
        return widen(np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1))

    def ensure_prefilter(self, minimum: int | None = None) -> bool:
        """Build the prefilter once the index reaches ``minimum`` vectors (PREFILTER_MIN, read at each call), when
        it was built in an older layout, and again once as many vectors have been filed since its build as it was
        built with: the index has doubled (cells of a fixed count grow with it, and each query's scan with them),
        or its content has turned over (cells trained on what is gone: new vectors crowd into the few cells nearest
        to them; 60k vectors replaced by 60k about other topics, in a throwaway run: the largest cell held 38 % of
        the entries, and each query read all of them, recall unchanged; 2.4 % after the rebuild). Amortised: a
        rebuild of n vectors comes after n writes. True when one exists."""
        if self._dim is None:
            return False
        minimum = PREFILTER_MIN if minimum is None else minimum
        self._sync_prefilter()
        built_for = int(self._meta("prefilter_size") or 0)
        if (self._prefilter is None and self.vector_count() >= minimum) or (
            self._prefilter is not None and self.prefilter_written() >= max(built_for, minimum)
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
                return self._prefiltered(self._prefilter, vector, k, wanted)
            sql = "SELECT item_id, distance FROM item_vectors WHERE embedding MATCH ? AND k = ?" + kind_sql
            rows = self._db.execute(sql + " ORDER BY distance", [vector.tobytes(), k, *wanted]).fetchall()
        return [(int(i), 1.0 - float(d)) for i, d in rows]

    def _prefiltered(
        self, prefilter: PrefilterState, vector: np.ndarray, k: int, wanted: list[str]
    ) -> list[tuple[int, float]]:
        """Candidates from the codes of the nearest cells (``_nearest_by_bits``), rescored exactly (cosine) in
        float16."""
        pool = max(PREFILTER_POOL, k * PREFILTER_PER_HIT)
        candidates = self._nearest_by_bits(prefilter, vector, pool, wanted, k)
        if not candidates:
            return []
        halves = np.empty((len(candidates), int(self._dim or 0)), dtype=np.float16)
        # Read in place (0.38 ms for 200 rows at 384-d through a query, a throwaway profile); every filed item has
        # its float16 row, written and deleted in the same transactions as its entries.
        self._read_blobs("item_half", "vector", candidates, halves)
        matrix = widen(halves)
        lengths = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))  # a third of np.linalg.norm's time here
        sims = matrix @ vector / (lengths * np.linalg.norm(vector) + 1e-12)
        order = np.argsort(-sims, kind="stable")[:k]
        return [(candidates[i], float(sims[i])) for i in order]
