"""The search pipeline: query → embedding → dense and lexical candidates → fusion → rerank → hits.

Stage 1 answers at once; stage 2 (rerank) yields progressively, batch by batch, so a UI can reorder results as
scores arrive. ``search`` runs both to completion for the CLI and evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from freeret_tui.engine.fusion import fuse
from freeret_tui.engine.models.base import Model, Pooling
from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.query import Filters, Query
from freeret_tui.engine.store import Store, StoredItem
from freeret_tui.engine.types import Hit, Kind
from freeret_tui.errors import NotReadyError, UsageError

__all__ = ["MODES", "Filters", "Query", "SearchOptions", "SearchResult", "Searcher"]

# Where stage-1 candidates come from: vectors, BM25, or both fused.
MODES = ("dense", "lexical", "hybrid")
# Kinds whose only words in the full-text index are the file's name: fusion does not count their absence from
# the lexical list against them (fusion.py).
LEXICALLY_BLIND = frozenset({Kind.IMAGE, Kind.PAGE})


@dataclass(frozen=True)
class SearchOptions:
    k: int = 10
    # Passages of one file among the hits (0: any number). A long file that matches well filled most of the list
    # with its passages (6 of the top 10 for "dpkg bug report" over a folder of READMEs); past two, a person
    # sees more by seeing another file, as web search shows at most two results of a site.
    per_file: int = 2
    mode: str = "hybrid"
    rerank: bool = True
    rerank_k: int = 10
    framing: Framing = Framing.MC
    pooling: Pooling = Pooling.PREMLP
    # How many candidates each side contributes before fusion.
    pool: int = 50
    # Share of the dense side in the fused score (README: measured on real weights; 0.2 kept hybrid above
    # lexical-only with a weak dense side).
    fusion: str = "convex"
    dense_weight: float = 0.2
    filters: Filters = Filters()


@dataclass(frozen=True)
class SearchResult:
    hits: tuple[Hit, ...]
    reranked: bool
    timings_ms: dict[str, float] = field(default_factory=dict)

    def no_good_match(self, threshold: float) -> bool:
        """True when reranked and no hit reaches ``threshold`` (also when nothing was found at all)."""
        return no_good_match(self.hits, threshold)


def no_good_match(hits: Sequence[Hit], threshold: float) -> bool:
    """The one rule for "no good match": nothing found, or reranked and no probability reaches ``threshold``."""
    probs = [h.rerank_prob for h in hits if h.rerank_prob is not None]
    return not hits or (bool(probs) and max(probs) < threshold)


class Searcher:
    """Runs queries against one store with one model (None: lexical search only)."""

    def __init__(self, store: Store, model: Model | None):
        self.store = store
        self.model = model

    def query_vector(self, query: Query, pooling: Pooling = Pooling.PREMLP) -> np.ndarray:
        if self.model is None:
            raise NotReadyError("dense search needs the model")
        return self.model.embed([query.content()], Side.QUERY, pooling=pooling)[0]

    def candidates(self, query: Query, opts: SearchOptions, vector: np.ndarray | None = None) -> list[Hit]:
        """Stage 1: fused dense + lexical candidates, best first (``opts.k`` or ``opts.rerank_k``, the larger)."""
        if opts.mode not in MODES:
            raise UsageError(f"unknown mode {opts.mode!r}")
        if query.image is None and not query.text.strip():
            raise UsageError("the query is empty")
        want = max(opts.k, opts.rerank_k if opts.rerank else 0)
        # Folder and date filters drop candidates after fusion: fetch five times as many to keep enough.
        pool = max(opts.pool, want) * (5 if opts.filters.on_files else 1)
        kinds = opts.filters.kinds or None
        dense: list[tuple[int, float]] = []
        lexical: list[tuple[int, float]] = []
        if opts.mode in ("dense", "hybrid") and self.model is not None:
            if vector is None:
                vector = self.query_vector(query, opts.pooling)
            dense = self.store.dense(vector, pool, kinds)
        if opts.mode in ("lexical", "hybrid") and query.text.strip():
            lexical = self.store.lexical(query.text, pool, kinds)
        if opts.mode == "dense" and self.model is None:
            raise NotReadyError("dense search needs the model")
        dense_scores, lexical_scores = dict(dense), dict(lexical)
        after, before = opts.filters.date_range()
        # Only items that pass the filters come back (and none deleted since the candidates were read).
        stored = self.store.items(list(dense_scores.keys() | lexical_scores.keys()), opts.filters.folder, after,
                                  before)
        blind = {i for i, item in stored.items() if item.chunk.kind in LEXICALLY_BLIND}
        fused = fuse(opts.fusion, dense, lexical, opts.dense_weight, blind)
        kept = _distinct(fused, stored, want, opts.per_file)
        hits = []
        for item_id, score, copies in kept:
            chunk = stored[item_id].chunk
            hits.append(
                Hit(
                    item_id=item_id,
                    path=chunk.path,
                    kind=chunk.kind,
                    text=chunk.text,
                    title=chunk.title,
                    location=chunk.location,
                    fused_score=score,
                    dense_score=dense_scores.get(item_id),
                    lexical_score=lexical_scores.get(item_id),
                    image=chunk.content().image,
                    dated=stored[item_id].dated,
                    copies=copies,
                )
            )
        return hits

    def rerank_steps(self, query: Query, hits: Sequence[Hit], opts: SearchOptions) -> Iterator[list[Hit]]:
        """Stage 2, progressively: after each batch, the full list reordered with the scores known so far.

        Reranked hits come first by probability; hits still waiting keep their stage-1 order after them.
        """
        if self.model is None:
            raise NotReadyError("rerank needs the model")
        top = list(hits[: opts.rerank_k])
        rest = list(hits[opts.rerank_k :])
        batch = max(1, self.model.batch_size)
        scored: list[Hit] = []
        for start in range(0, len(top), batch):
            part = top[start : start + batch]
            probs = self.model.rerank(query.content(), [h.content() for h in part], opts.framing)
            scored += [replace(h, rerank_prob=p) for h, p in zip(part, probs, strict=True)]
            # Stable sort: equal probabilities keep their stage-1 order.
            ordered = sorted(scored, key=lambda h: -(h.rerank_prob or 0.0))
            yield ordered + top[start + batch :] + rest

    def search(self, query: Query, opts: SearchOptions) -> SearchResult:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        vector = None
        if opts.mode != "lexical" and self.model is not None:
            vector = self.query_vector(query, opts.pooling)
            timings["embed_query"] = (time.perf_counter() - t0) * 1000
        t1 = time.perf_counter()
        hits = self.candidates(query, opts, vector)
        timings["candidates"] = (time.perf_counter() - t1) * 1000
        reranked = False
        if opts.rerank and hits and self.model is not None:
            t2 = time.perf_counter()
            for step in self.rerank_steps(query, hits, opts):
                hits = step
            reranked = True
            timings["rerank"] = (time.perf_counter() - t2) * 1000
        timings["total"] = (time.perf_counter() - t0) * 1000
        return SearchResult(tuple(hits[: opts.k]), reranked, timings)


def _distinct(fused: Sequence[tuple[int, float]], stored: dict[int, StoredItem], want: int,
              per_file: int) -> list[tuple[int, float, tuple[Path, ...]]]:
    """The first ``want`` of the ``fused`` items found in ``stored``, best first, as (item id, score, copies).

    The same passage of identical files (a photo in two albums, a note and its backup) is one hit, at the
    best-ranked copy's place, naming the others: copies would fill the hits, the rerank and an answer's sources
    with one thing. Files without a content hash (an evaluation's passages) are never merged. At most
    ``per_file`` passages of one file (0: any number), and a copy of a passage passed over is passed over too."""
    kept: list[int] = []
    scores: dict[int, float] = {}
    copies: dict[int, list[Path]] = {}
    first_of: dict[tuple[object, ...], int] = {}
    per_path: dict[Path, int] = {}
    for item_id, score in fused:
        if item_id not in stored:
            continue
        item = stored[item_id]
        c = item.chunk
        key = (item.sha256, c.kind, c.chunk_no, c.page, c.line_start) if item.sha256 else None
        if key is not None and key in first_of:
            if first_of[key] in copies:  # else the passage was passed over: so is its copy
                copies[first_of[key]].append(c.path)
            continue
        if len(kept) == want:
            continue  # still read on: a copy of a kept hit may come later
        if key is not None:
            first_of[key] = item_id
        if per_file and per_path.get(c.path, 0) >= per_file:
            continue
        per_path[c.path] = per_path.get(c.path, 0) + 1
        kept.append(item_id)
        scores[item_id] = score
        copies[item_id] = []
    return [(item_id, scores[item_id], tuple(copies[item_id])) for item_id in kept]
