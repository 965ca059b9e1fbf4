"""Reciprocal-rank fusion of the dense and lexical candidate lists.

RRF uses ranks only, so BM25's unbounded scores and cosine similarities need no calibration against each other.
Each list gets a weight: the README's table shows how the dense weight was chosen so that a weak dense side
(small models on short text) cannot drag a strong lexical side down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# The constant from Cormack et al. (2009); it damps the influence of the very top ranks.
RRF_K = 60


def rrf(rankings: Mapping[str, Sequence[int]], weights: Mapping[str, float], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fused (id, score) best first: score = Σ weight_list / (k + rank_in_list), ranks starting at 1."""
    scores: dict[int, float] = {}
    for name, ids in rankings.items():
        weight = weights.get(name, 1.0)
        for rank, item_id in enumerate(ids, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
