"""The approximate-search prefilter's arithmetic, pure NumPy: sign bits and coarse cells (no SQL; the store
keeps what this computes).

Two quantisers, used one after the other on large indexes:

- **cells** (an inverted file): spherical k-means centroids of the mean-centred vectors split the index into
  cells; each vector is filed in its nearest cell and a second one (``assign``), and a query looks only in the
  cells of its nearest centroids (``PROBES`` or more, by how close the next ones score).
- **sign bits**: one bit per dimension of the centred vector and two factors per vector (``sign_codes``); the
  Hamming distance to the query's bits ranks the vectors of those cells cheaply, the query's float vector
  against the bits of the best of those ranks them closely (``estimate``), and the best few of that, those that
  may still win within the estimate's error (``error_bounds``), are rescored exactly with their float vectors.

Residual-stream vectors share a large mean direction; centring first makes both the bits and the cells encode
what differs between items rather than that common offset. Everything here works on unit-length vectors, the
centre included (the mean of unit vectors): the store ranks by cosine, which ignores length, and so must the
prefilter. The models return unit vectors already; a caller that did not was centred wrongly, read the wrong cells
and got the wrong bits (recall@10 0.904 → 0.729 on the mixed set at 100k with items stored at unit length and
queries not, as benchmarks/stage1_peers.py first did).
"""

from __future__ import annotations

import numpy as np

# Vectors whose nearest cell it is, per cell. With two assignments a cell holds about twice that many entries,
# which is the size of sqlite-vec's storage chunks, so that a cell is about one chunk.
CELL_SIZE = 1024
# Cells each vector is filed in (1 or 2). An item about two things sits between clusters; filed only in its
# nearest cell, its neighbours often sit in another. Measured through the store at 100k with items leaning towards
# a second random topic (benchmarks/stage1_latency.py --mix 1.0, 30 queries, the second cell then the next
# nearest): recall@10 0.73 filed once with 8 probes (8.6 ms), 0.88-0.90 filed twice with 4 probes (10-11 ms) — the
# same number of entries scanned. On clustered vectors (25k) both gave 0.95-0.96.
ASSIGNMENTS = 2
# How strongly the second cell's residual is kept from lining up with the first's (``_spill``); SOAR's paper uses
# 1. On 1M all-MiniLM text vectors (benchmarks/stage1_peers.py's, a throwaway measurement of the share of each
# query's true top-10 filed in the cells it probes): 16 cells held 0.944 with the second-nearest cell, 0.960 with
# SOAR at 1 (37k entries read), 0.959 at 2; the second-nearest rule needed 32 cells (73k entries) for 0.964. On
# items about two topics (100k, default probes, a throwaway run) recall@10 went from 0.971 to 0.986.
SOAR_WEIGHT = 1.0
# Cells scanned per query: at least PROBES, more while the next centroid is within PROBE_MARGIN (cosine) of the
# nearest, at most MAX_PROBES. Where cells follow clusters one centroid stands out and few cells hold a query's
# neighbours; where scores are flat (real text-embedding vectors) they are spread over many. A cell costs ~0.1 ms
# to read and count at 384-d (~2,000 entries), so a wide margin is cheap where it matters. All-MiniLM text
# vectors at 100k, rescore pool 200 (a throwaway sweep on benchmarks/stage1_peers.py's vectors, one run each):
# margin 0.25 and at most 16 cells 0.952 recall@10 at 2.4 ms, 0.35 and 32 cells 0.984 at 3.4 ms, 0.4 and 32
# 0.984 at 4.2 ms; the synthetic sets' recall did not move with the margin (one centroid stands out there). With
# the second cell by SOAR (``_spill``) fewer cells hold as much: at 1M (a throwaway sweep, pool 200) at most 32
# cells gave 0.973 at 2.52 ms, 24 0.965 at 2.06, 16 0.959 at 1.74, 12 0.941 at 1.53.
PROBES = 3
PROBE_MARGIN = 0.35
MAX_PROBES = 16
# Training vectors per centroid for k-means (more buys little: the centroids only route queries).
_TRAIN_PER_CELL = 32
_ITERATIONS = 8
_BLOCK = 8192  # rows per matrix product, so that assignment of 1M vectors never holds a 1M x cells matrix
_BLOCK_SCORES = 1 << 23  # and at most this many scores per product in ``assign`` (32 MB, three such matrices)


def cell_count(vectors: int) -> int:
    """How many cells an index of this many vectors gets."""
    return max(1, round(vectors / CELL_SIZE))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float32))
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def centre_of(sample: np.ndarray) -> np.ndarray:
    """The centre the bits and cells are taken around: the mean of the sample's unit vectors."""
    return _unit_rows(sample).mean(axis=0)


def sign_codes(vectors: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's code: the sign bits of its centred unit vector x - c, as 64-bit words (n, words) uint64 (zero
    bits pad the last word: equal everywhere, they change no count), and two float32 factors (n, 2) that turn a
    query's product with those signs into an estimate of its cosine to the vector (``estimate``):

    q·x = q·c + (q - c)·(x - c) + c·(x - c), and (q - c)·(x - c) ≈ |x - c|² / |x - c|₁ · (q - c)·sign(x - c)
    (RaBitQ's estimator, Gao & Long 2024: the product with the signs, divided by how well the signs line up with
    the vector). q·c is the same for every item, so the factors are the scale |x - c|² / |x - c|₁ and the offset
    c·(x - c)."""
    points = _unit_rows(vectors) - centre
    length = np.einsum("ij,ij->i", points, points)
    factors = np.stack([length / np.maximum(np.abs(points).sum(axis=1), 1e-12), points @ centre], axis=1)
    return _packed(points > 0), factors.astype(np.float32)


def _packed(bits: np.ndarray) -> np.ndarray:
    """Rows of bits (..., dim) as 64-bit words (..., words), zero bits padding the last word."""
    padded = np.zeros((*bits.shape[:-1], -(-bits.shape[-1] // 64) * 64), dtype=bool)
    padded[..., : bits.shape[-1]] = bits
    return np.packbits(padded, axis=-1).view(np.uint64)


def centred(query: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """A query as the functions below take it: its unit vector less the centre (1-D), computed once a query."""
    return _unit_rows(query)[0] - centre


def sign_bits(point: np.ndarray) -> np.ndarray:
    """The sign bits of a centred query (``centred``), as ``sign_codes`` gives a vector's: (words,) uint64."""
    return _packed(point > 0)


def hamming(columns: np.ndarray, query_words: np.ndarray) -> np.ndarray:
    """Bits that differ between each coded vector and ``query_words``, from the codes word-major: ``columns``
    (words, ...), ``columns[w]`` the w-th 64-bit word of every code; int32, shaped ``columns[0]``. One pass over
    each word's row, counts summed in 16 bits: 0.23 ms for 58k codes of 6 words, against 0.75 ms row-major (n,
    words) summed by a matrix product (a throwaway micro-benchmark). int32 out, since NumPy's argpartition over
    uint16 took 0.53 ms there and 0.07 ms over int32."""
    counts = np.zeros(columns.shape[1:], dtype=np.uint16)
    for row, word in zip(columns, query_words, strict=True):
        counts += np.bitwise_count(row ^ word)
    return counts.astype(np.int32)


# Weights of the query's four bit planes in ``estimate``.
_PLANE_WEIGHTS = np.array([1, 2, 4, 8], dtype=np.float32)


def estimate(columns: np.ndarray, factors: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Estimated cosines (less a constant: only their order is meant) of a centred query (``centred``) to the
    coded vectors, from the query's float vector against each code's sign bits (``sign_codes``), the codes
    word-major as ``hamming`` takes them: (words, n). Ranks far closer than the Hamming distance between the two
    sets of sign bits, which also throws the query's magnitudes and each vector's length away: of the true top-10,
    the best 100 items held 0.938 against 0.822 on items about two topics (100k, 1536-d, a throwaway measurement
    over the stored blocks).

    The query's centred coordinates are rounded to 16 levels, lo + step·u, so that the product with the bits of x
    is four AND-and-count passes, one per bit of u, plus one count of x's bits: Σ q_k x_k = lo·|x| + step·Σ_b 2^b
    |u_b & x| (RaBitQ's rounding; recall the same as with the exact product on that set). Word-major, each pass
    runs along the codes: 87 µs for 800 codes at 384-d against 266 µs over them row-major (n, words), whose
    innermost axis of six words NumPy loops over slowly; 186 against 286 µs at 1536-d (a throwaway timing)."""
    low, high = float(point.min()), float(point.max())
    step = max(high - low, 1e-12) / 15
    levels = np.rint((point - low) / step).astype(np.uint8)
    planes = np.ones((5, len(point)), dtype=bool)  # the last counts x's own bits
    planes[:4] = (levels >> np.arange(4, dtype=np.uint8)[:, None]) & 1
    counts = np.bitwise_count(columns[None] & _packed(planes)[:, :, None]).sum(axis=1, dtype=np.float32)  # (5, n)
    weighted = _PLANE_WEIGHTS @ counts[:4]  # exact: whole numbers below 2^24
    # q·sign(x) over the signs ±1: 2·Σ q_k x_k - Σ q_k.
    product = 2 * (low * counts[4] + step * weighted) - float(point.sum())
    return factors[:, 0] * product + factors[:, 1]


def error_bounds(factors: np.ndarray, point: np.ndarray, centre: np.ndarray, epsilon: float) -> np.ndarray:
    """How far each ``estimate`` may be from the true cosine: ``epsilon`` times RaBitQ's standard error (Gao & Long
    2024: the error of <q, o> estimated through the signs of o is about sqrt((1 - a²) / a²) / sqrt(D - 1), a = <sign
    (o)/√D, o>; scaled here by |x - c| · |q - c|). Without RaBitQ's random rotation of the space it is not a
    guarantee: at epsilon 1.9 about 6 % of single estimates fall outside, as for a Gaussian (tests/
    test_store_scale.py); the prefilter compares two bounds (``_nearest_by_bits``), and its recall did not move.

    Both lengths come from the factors already stored: for a unit x, |x - c|² = 1 - 2·c·(x - c) - |c|² (the
    offset factor), and a = |x - c|₁ / (|x - c| √D) = |x - c| / (scale · √D) (the scale factor |x - c|² / |x -
    c|₁). So no entry needs more bytes. ``point`` is the centred query (``centred``)."""
    dim = len(point)
    length = np.sqrt(np.maximum(1 - 2 * factors[:, 1] - float(centre @ centre), 0.0))
    align = np.clip(length / np.maximum(factors[:, 0] * np.sqrt(dim), 1e-12), 1e-6, 1.0)
    spread = np.sqrt(1 - align**2) / align / np.sqrt(max(dim - 1, 1))
    return (epsilon * float(np.linalg.norm(point))) * length * spread


def train_cells(sample: np.ndarray, centre: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means centroids of the centred, unit-length sample: (cells, dim) float32.

    Seeded by k-means++ (each new seed drawn with probability proportional to its squared distance to the seeds so
    far), so that two seeds rarely start in one cluster while another cluster has none; then Lloyd's iterations,
    which do not undo such a start. Weighting by the plain distance left that at a few percent per seed: with
    eight clear clusters and seven seeded, the 250 vectors of the last one weighed 285 against 19 for the 1,750
    already seeded (test_cells_follow_clusters' data). A cell left empty is reseeded with a random sample
    vector, so every centroid routes to something."""
    rng = np.random.default_rng(seed)
    points = _unit_rows(_unit_rows(sample) - centre)
    cells = min(cells, len(points))
    chosen = [int(rng.integers(len(points)))]
    distance = np.maximum(1.0 - points @ points[chosen[0]], 0.0)
    for _ in range(cells - 1):
        weight = distance**2
        total = float(weight.sum())
        pick = int(rng.choice(len(points), p=weight / total)) if total > 0 else int(rng.integers(len(points)))
        chosen.append(pick)
        np.minimum(distance, np.maximum(1.0 - points @ points[pick], 0.0), out=distance)
    centroids = points[chosen].copy()
    for _ in range(_ITERATIONS):
        labels = _nearest(points, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, points)
        empty = np.bincount(labels, minlength=cells) == 0
        sums[empty] = points[rng.choice(len(points), int(empty.sum()))]
        centroids = _unit_rows(sums)
    return centroids


def training_size(vectors: int) -> int:
    """Sample size for ``train_cells`` at this index size."""
    return min(vectors, max(20_000, _TRAIN_PER_CELL * cell_count(vectors)))


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    labels = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), _BLOCK):
        labels[start : start + _BLOCK] = np.argmax(points[start : start + _BLOCK] @ centroids.T, axis=1)
    return labels


def assign(vectors: np.ndarray, centre: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The cells of each vector: its nearest centroid by cosine after centring, then (with ``ASSIGNMENTS`` 2) a
    second cell chosen by ``_spill``; (n, ASSIGNMENTS), or (n, 1) while there is a single cell."""
    points = _unit_rows(_unit_rows(vectors) - centre)
    if ASSIGNMENTS not in (1, 2):
        raise ValueError(f"ASSIGNMENTS is 1 or 2, not {ASSIGNMENTS}")
    width = min(ASSIGNMENTS, len(centroids))
    cells = np.empty((len(points), width), dtype=np.int64)
    step = max(64, min(_BLOCK, _BLOCK_SCORES // len(centroids)))
    for start in range(0, len(points), step):
        block = points[start : start + step]
        scores = block @ centroids.T
        cells[start : start + step, 0] = first = np.argmax(scores, axis=1)
        if width > 1:
            cells[start : start + step, 1] = _spill(block, scores, first, centroids)
    return cells


def _spill(points: np.ndarray, scores: np.ndarray, first: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each point's second cell, after SOAR (Sun, Guo & Kumar, NeurIPS 2023: spilling with orthogonality-amplified
    residuals): not simply the next nearest centroid, but the one whose residual u - c is close and least parallel
    to the first cell's residual r, minimising |u - c|² + SOAR_WEIGHT · (r·(u - c))² / |r|². A query whose
    neighbour its first cell misrouted (the query lines up with that residual) then finds it through a cell that
    errs another way; the next nearest centroid mostly errs the same way. ``points`` unit rows, ``scores`` their
    cosines to every centroid."""
    residual = points - centroids[first]
    along = residual @ centroids.T  # r·c, every cell
    own = np.einsum("ij,ij->i", residual, points)  # r·u
    size = np.maximum(np.einsum("ij,ij->i", residual, residual), 1e-12)
    loss = 2 - 2 * scores + SOAR_WEIGHT * (own[:, None] - along) ** 2 / size[:, None]
    loss[np.arange(len(points)), first] = np.inf
    return np.argmin(loss, axis=1)


def probe(point: np.ndarray, centroids: np.ndarray, probes: int | None = None) -> list[int]:
    """The cells a centred query (``centred``) looks in, nearest centroid first: ``probes`` of them if given, else
    by the margin rule above (the module's constants are read at each call: benchmarks set them)."""
    scores = centroids @ (point / max(float(np.linalg.norm(point)), 1e-12))  # cosines: the margin is one
    order = np.argsort(-scores, kind="stable")  # ties in index order: the same cells every time
    if probes is None:
        close = int(np.count_nonzero(scores >= scores[order[0]] - PROBE_MARGIN))
        probes = min(max(close, PROBES), MAX_PROBES)
    return [int(c) for c in order[: min(probes, len(scores))]]
