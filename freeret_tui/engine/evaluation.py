"""Retrieval evaluation over BEIR-format files: nDCG@10, Recall@1/10, MRR@10 and timings, per configuration.

The corpus goes through the same store and search pipeline as a person's files (an in-memory database), so
what is measured is what ships. Lexical results do not depend on pooling and are computed once.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from freeret_tui.engine.models.base import Model, Pooling
from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.search import Query, Searcher, SearchOptions
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, Hit, Kind
from freeret_tui.errors import DatasetError

# Passages longer than this many model tokens are cut for embedding and rerank (BEIR passages rarely are).
MAX_PASSAGE_TOKENS = 512


@dataclass(frozen=True)
class Dataset:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]  # id -> text (only queries that have relevance judgements)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{n}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or "_id" not in row or "text" not in row:
            raise DatasetError(f'{path}:{n}: each line needs "_id" and "text"')
        rows.append(row)
    return rows


def load_beir(corpus: Path, queries: Path, qrels: Path) -> Dataset:
    docs = {str(r["_id"]): (str(r.get("title", "")), str(r["text"])) for r in _jsonl(corpus)}
    texts = {str(r["_id"]): str(r["text"]) for r in _jsonl(queries)}
    judgements: dict[str, dict[str, int]] = {}
    try:
        with qrels.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["query-id", "corpus-id"]:
                raise DatasetError(f"{qrels}: the first line must be the header 'query-id<TAB>corpus-id<TAB>score'")
            for n, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 3:
                    raise DatasetError(f"{qrels}:{n}: expected query-id, corpus-id and score")
                try:
                    grade = int(float(row[2]))
                except ValueError:
                    raise DatasetError(f"{qrels}:{n}: score {row[2]!r} is not a number") from None
                if grade > 0:
                    judgements.setdefault(row[0], {})[row[1]] = grade
    except OSError as err:
        raise DatasetError(f"cannot read {qrels}: {err.strerror or err}") from None
    judged = {q: t for q, t in texts.items() if q in judgements}
    if not judged or not docs:
        raise DatasetError("no query has both a text and a positive relevance judgement, or the corpus is empty")
    return Dataset(docs, judged, judgements)


def metrics(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 (graded), Recall@1, Recall@10 and MRR@10 over the queries in ``ranked``."""
    totals = {"ndcg@10": 0.0, "recall@1": 0.0, "recall@10": 0.0, "mrr@10": 0.0}
    for qid, docs in ranked.items():
        rel = qrels[qid]
        dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(docs[:10]))
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
        totals["ndcg@10"] += dcg / idcg
        totals["recall@1"] += len({d for d in docs[:1] if d in rel}) / len(rel)
        totals["recall@10"] += len({d for d in docs[:10] if d in rel}) / len(rel)
        first = next((i for i, d in enumerate(docs[:10]) if d in rel), None)
        totals["mrr@10"] += 0.0 if first is None else 1.0 / (first + 1)
    return {k: round(v / max(1, len(ranked)), 4) for k, v in totals.items()}


def _truncate(model: Model, text: str) -> str:
    spans = model.token_spans(text)
    return text if len(spans) <= MAX_PASSAGE_TOKENS else text[: spans[MAX_PASSAGE_TOKENS - 1][1]]


def _build_store(model: Model, data: Dataset, pooling: Pooling) -> Store:
    store = Store(":memory:")
    store.bind_model(model.name, model.dim, model.image_max_pixels)
    ids = list(data.corpus)
    chunks = [Chunk(Path(i), Kind.TEXT, _truncate(model, data.corpus[i][1]), data.corpus[i][0]) for i in ids]
    # Title and text both go to the model, as BEIR evaluations do; the title is also an FTS5 column.
    contents = [Chunk(c.path, c.kind, f"{c.title}\n{c.text}".strip()).content() for c in chunks]
    vectors = model.embed(contents, Side.CANDIDATE, pooling=pooling)
    for chunk, vector in zip(chunks, vectors, strict=True):
        store.put_file(chunk.path, Path("beir"), 0, 0.0, "", [chunk], vector[None, :])
    return store


def evaluate(
    model: Model,
    data: Dataset,
    modes: Sequence[str],
    poolings: Sequence[Pooling],
    framings: Sequence[Framing],
    rerank: bool,
    rerank_k: int = 10,
    rerank_modes: Sequence[str] = ("hybrid",),
    dense_weight: float = 0.2,
    fusion: str = "convex",
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """One row per configuration: stage 1 for every (pooling, mode); when ``rerank``, a row per framing on top of
    each of ``rerank_modes`` with the first pooling (reranking reads no embedding, so one pooling suffices)."""
    rows: list[dict[str, Any]] = []
    qids = list(data.queries)
    lexical_done = False
    for pooling in poolings:
        log(f"embedding {len(data.corpus)} passages ({pooling.value} pooling)")
        t0 = time.perf_counter()
        store = _build_store(model, data, pooling)
        embed_s = time.perf_counter() - t0
        searcher = Searcher(store, model)
        t0 = time.perf_counter()
        qvecs = model.embed([Query(data.queries[q]).content() for q in qids], Side.QUERY, pooling=pooling)
        query_embed_ms = (time.perf_counter() - t0) * 1000 / len(qids)
        for mode in modes:
            if mode == "lexical" and lexical_done:
                continue
            opts = SearchOptions(k=10, mode=mode, rerank=False, rerank_k=rerank_k, fusion=fusion,
                                 dense_weight=dense_weight)
            t0 = time.perf_counter()
            stage1: dict[str, list[Hit]] = {
                q: searcher.candidates(Query(data.queries[q]), opts, qvecs[i]) for i, q in enumerate(qids)
            }
            search_ms = (time.perf_counter() - t0) * 1000 / len(qids)
            base = {"mode": mode, "pooling": None if mode == "lexical" else pooling.value}
            ranked = {q: [str(h.path) for h in hits] for q, hits in stage1.items()}
            rows.append({**base, "rerank": None, **metrics(ranked, data.qrels),
                         "ms_per_query": round(search_ms + (0 if mode == "lexical" else query_embed_ms), 2),
                         "corpus_embed_s": None if mode == "lexical" else round(embed_s, 2)})
            lexical_done = lexical_done or mode == "lexical"
            wants_rerank = rerank and mode in rerank_modes and pooling == poolings[0]
            for framing in framings if wants_rerank else ():
                log(f"reranking top-{rerank_k} of {mode} ({framing.value})")
                t0 = time.perf_counter()
                ranked = {}
                for q, hits in stage1.items():
                    ropts = replace(opts, rerank=True, framing=framing)
                    final = hits
                    for final in searcher.rerank_steps(Query(data.queries[q]), hits, ropts):
                        pass
                    ranked[q] = [str(h.path) for h in final]
                rerank_ms = (time.perf_counter() - t0) * 1000 / len(qids)
                rows.append({**base, "rerank": framing.value, **metrics(ranked, data.qrels),
                             "ms_per_query": round(rerank_ms, 2), "corpus_embed_s": None})
        store.close()
    return {
        "model": model.name,
        "dtype": model.dtype,
        "queries": len(qids),
        "corpus": len(data.corpus),
        "rerank_k": rerank_k,
        "fusion": fusion,
        "dense_weight": dense_weight,
        "runs": rows,
    }
