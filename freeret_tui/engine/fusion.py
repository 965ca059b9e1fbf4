"""Fusion of the dense and lexical candidate lists into one stage-1 ranking.

Two methods, both measured in the README on real weights:
- ``convex`` (default): min-max normalise each list's scores per query, then lexical·(1-w) + dense·w. It keeps
  BM25's confidence: when one passage shares rare words with the query, its lead survives fusion.
- ``rrf``: reciprocal-rank fusion (Cormack et al., 2009). Ranks only, so a weak dense list pulls clear lexical
  winners down: with SmolLM2-135M it cost 0.16 nDCG@10 against lexical alone (README).
An item missing from one list scores 0 on that side, the same as that list's last item — except an item the
lexical side is *blind* to: a photo or a scanned page, whose only words in the full-text index are its file name.
Not being found by words says nothing about it, so its lexical side is estimated from its dense side (its best
rank in rrf). Without that, a photo scored at most the dense share (0.2) while every note sharing a query word with
a BM25 score over a quarter of the best one's outranked it: in a folder of photos and notes, a text query rarely
showed a photo. The estimate counts less than words found (``IMPUTED_SHARE`` of its dense side; in rrf half a rank
behind): photos often have words of their own (keywords, captions, Takeout descriptions: photo_meta.py), and one
whose words match the query should not lose to the photo first by meaning alone, as it did when the estimate
counted fully (the best by meaning then scored 1.0, which nothing could pass).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

FUSIONS = ("convex", "rrf")
# The constant from Cormack et al. (2009); it damps the influence of the very top ranks.
RRF_K = 60
# What a blind item's estimated lexical side counts against words actually found (above). With the default dense
# weight 0.2, the photo first by meaning scores 0.84; a photo whose words are the best lexical match passes it
# unless it sits in the bottom fifth of the dense list's range, and a note must match the words about as well
# (min-max BM25 over ~0.8) to pass it. Chosen, not measured: no VLM weights exist here to measure it on.
IMPUTED_SHARE = 0.8

Scored = Sequence[tuple[int, float]]


def _minmax(pairs: Scored) -> dict[int, float]:
    if not pairs:
        return {}
    values = [s for _, s in pairs]
    lo, hi = min(values), max(values)
    if hi == lo:
        return {i: 1.0 for i, _ in pairs}
    return {i: (s - lo) / (hi - lo) for i, s in pairs}


def convex(dense: Scored, lexical: Scored, dense_weight: float,
           blind: Collection[int] = frozenset()) -> list[tuple[int, float]]:
    """(id, fused score) best first: (1 - w)·minmax(lexical) + w·minmax(dense). For an id in ``blind`` the lexical
    side is the better of its own and ``IMPUTED_SHARE`` of its dense side. Ties: found by words first, then by
    id."""
    d, lex = _minmax(dense), _minmax(lexical)
    if not lex:
        dense_weight = 1.0  # image queries or no shared words: the dense side alone decides
    elif not d:
        dense_weight = 0.0

    def lexical_side(i: int) -> float:
        return max(lex.get(i, 0.0), IMPUTED_SHARE * d.get(i, 0.0)) if i in blind else lex.get(i, 0.0)

    scores = {i: (1 - dense_weight) * lexical_side(i) + dense_weight * d.get(i, 0.0) for i in d.keys() | lex.keys()}
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0] not in lex, pair[0]))


def rrf(rankings: Mapping[str, Sequence[int] | Mapping[int, float]], weights: Mapping[str, float],
        k: int = RRF_K) -> list[tuple[int, float]]:
    """Fused (id, score) best first: score = Σ weight_list / (k + rank_in_list), ranks starting at 1. A ranking is
    ids best first, or each id's rank."""
    scores: dict[int, float] = {}
    for name, ranking in rankings.items():
        weight = weights.get(name, 1.0)
        ranks = ranking if isinstance(ranking, Mapping) else {i: r for r, i in enumerate(ranking, start=1)}
        for item_id, rank in ranks.items():
            scores[item_id] = scores.get(item_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def fuse(method: str, dense: Scored, lexical: Scored, dense_weight: float,
         blind: Collection[int] = frozenset()) -> list[tuple[int, float]]:
    """Fused (id, score) best first; ``blind``: ids the lexical side sees only by name (photos, scanned pages)."""
    if method == "convex":
        return convex(dense, lexical, dense_weight, blind)
    if method == "rrf":
        dense_ranks = {i: r for r, (i, _) in enumerate(dense, start=1)}
        lexical_ranks: dict[int, float] = {i: r for r, (i, _) in enumerate(lexical, start=1)}
        if lexical_ranks:  # no lexical list at all: nothing to impute, the dense side decides alone
            for i in dense_ranks.keys() & blind:
                # Its dense rank, half a rank behind an item words found at that rank. (IMPUTED_SHARE's product,
                # 1/(k + r') = share/(k + r), would put it 16 ranks back: reciprocal ranks are that flat.)
                imputed = dense_ranks[i] + 0.5
                lexical_ranks[i] = min(lexical_ranks.get(i, imputed), imputed)
        return rrf({"dense": dense_ranks, "lexical": lexical_ranks}, {"dense": dense_weight, "lexical": 1.0})
    raise ValueError(f"unknown fusion {method!r}; choose from {', '.join(FUSIONS)}")
