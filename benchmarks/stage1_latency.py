"""Stage-1 latency and scale: candidate search at growing index sizes, three ways, in one run.

For each size and for the top-10 and the top-50 (the dense candidates a search fuses with the lexical ones):
sqlite-vec exact brute force (``Store.dense(exact=True)``), the prefilter (``Store.dense``, what
the index uses from ``PREFILTER_MIN`` vectors on: the query's nearest k-means cells, Hamming on sign bits in them,
exact float16 rescore), and a NumPy brute-force baseline over the same vectors held in memory. Reports p50/p95 per
query, fetch time of the top-10 items, recall@10 of the prefilter against exact, and (with ``--model``) the
query-embedding time of a real model so the warm end-to-end query is embed + search + fetch. Writes a
latency-vs-size plot.

Vectors are synthetic at the default model's size (Qwen2-VL-2B: 1536): a shared offset (residual-stream vectors
share a large mean direction), a topic direction per ``--topic-size`` items, a subtopic per ~10 items (the
near neighbours a query should find: the same trip, the same project) and per-item noise; queries are new
draws from a subtopic. Topics larger than the prefilter's candidate pool (200) make it honest: the sign bits must
find the right 10 among ~1000 members of the same topic.

    python benchmarks/stage1_latency.py [--sizes 1000,10000,100000,1000000] [--model smollm2] [--plot F.png]
        [--mix 1.0] [--probes N] [--assignments N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from freeret_tui.engine import ann
from freeret_tui.engine import store as store_module
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, Kind

PER_FILE = 1000  # vectors written per put_file call (one "file" of many chunks keeps inserting cheap)


def synthetic(n: int, dim: int, rng: np.random.Generator, common: np.ndarray, topics: np.ndarray,
              subtopics: np.ndarray, mix: float = 0.0) -> np.ndarray:
    """Draws around random subtopics; subtopic s belongs to topic s % len(topics). With ``mix``, each draw also
    leans towards a second, random topic by a weight drawn from [0, mix) (items about two things), which blurs
    the clusters that the prefilter's cells follow. Built in float32 blocks: at 1M x 1536 the float64
    temporaries alone would need ~36 GB."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 20_000):
        m = min(20_000, n - start)
        labels = rng.integers(0, len(subtopics), m)
        out[start : start + m] = common + topics[labels % len(topics)] + 0.7 * subtopics[labels]
        out[start : start + m] += 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
        if mix:  # drawn only then, so that the default data stay the same draw for draw
            lean = mix * rng.random((m, 1), dtype=np.float32)
            other = topics[rng.integers(0, len(topics), m)]
            out[start : start + m] += lean * (other - topics[labels % len(topics)])
    return out


def percentiles(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def timed(fn: Callable[[np.ndarray], list[int]], queries: np.ndarray) -> tuple[list[float], list[list[int]]]:
    fn(queries[0])  # warm-up: page cache and lazy statement preparation
    times, results = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - start)
    return times, results


def build(path: Path, vectors: np.ndarray) -> tuple[Store, float]:
    store = Store(path)
    store.bind_model("synthetic", vectors.shape[1])
    start = time.perf_counter()
    for f, offset in enumerate(range(0, len(vectors), PER_FILE)):
        block = vectors[offset : offset + PER_FILE]
        chunks = [Chunk(Path(f"/bench/{f}.txt"), Kind.TEXT, "", f"{f}.txt", chunk_no=i) for i in range(len(block))]
        store.put_file(Path(f"/bench/{f}.txt"), Path("/bench"), 0, 0.0, f"{f:064x}", chunks, block)
    return store, time.perf_counter() - start


def run_size(n: int, dim: int, n_queries: int, topic_size: int, seed: int, mix: float) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    common = 3.0 * rng.standard_normal(dim, dtype=np.float32)
    topics = rng.standard_normal((max(n // topic_size, 2), dim), dtype=np.float32)
    subtopics = rng.standard_normal((max(n // 10, 2), dim), dtype=np.float32)
    vectors = synthetic(n, dim, rng, common, topics, subtopics, mix)
    queries = synthetic(n_queries, dim, rng, common, topics, subtopics, mix)
    with tempfile.TemporaryDirectory() as tmp:
        store, insert_s = build(Path(tmp) / "index.db", vectors)
        searches: dict[int, dict[str, object]] = {}
        exact_r: dict[int, list[list[int]]] = {}
        for k in (10, 50):
            exact_t, exact_r[k] = timed(lambda q, k=k: [i for i, _ in store.dense(q, k, exact=True)], queries)
            searches[k] = {"exact_sqlite_vec": percentiles(exact_t)}
        start = time.perf_counter()
        store.build_prefilter()
        prefilter_build_s = time.perf_counter() - start
        for k in (10, 50):
            fast_t, fast_r = timed(lambda q, k=k: [i for i, _ in store.dense(q, k)], queries)
            searches[k]["cells_bits_rescore"] = percentiles(fast_t)
            # recall@10 either way: the top-10 of the fast path's k against exact's top-10
            searches[k]["recall@10_vs_exact"] = round(statistics.mean(
                len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(exact_r[k], fast_r, strict=True)), 4)
        store_cells = store.prefilter_cells
        ids = np.array(sorted({i for r in exact_r[10] for i in r}))
        fetch_t, _ = timed(lambda q: list(store.items([int(i) for i in ids[:10]])), queries)
        normed = vectors
        normed /= np.linalg.norm(vectors, axis=1, keepdims=True)  # in place: the store has its own copy now

        def numpy_top10(q: np.ndarray) -> list[int]:
            sims = normed @ (q / np.linalg.norm(q))
            top = np.argpartition(-sims, 10)[:10]
            return [int(i) + 1 for i in top[np.argsort(-sims[top])]]  # item ids start at 1

        numpy_t, numpy_r = timed(numpy_top10, queries)
        store.close()
    numpy_agrees = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(exact_r[10], numpy_r, strict=True))
    return {
        "vectors": n,
        "insert_s": round(insert_s, 2),
        "prefilter_build_s": round(prefilter_build_s, 2),
        "prefilter_cells": store_cells,
        **searches[10],
        "top50": searches[50],
        "numpy_brute_force": percentiles(numpy_t),
        "fetch_top10": percentiles(fetch_t),
        "numpy_vs_exact_agreement": round(numpy_agrees, 4),
    }


def embed_times(model_name: str, n_queries: int) -> dict[str, float]:
    from freeret_tui.engine.models import load_model
    from freeret_tui.engine.prompts import Side
    from freeret_tui.engine.types import Content

    model = load_model(model_name, "cpu", 1, 16, "auto")
    texts = [f"notes about the trip to the harbour, day {i}" for i in range(n_queries)]
    model.embed([Content(texts[0])], Side.QUERY)
    times = []
    for text in texts:
        start = time.perf_counter()
        model.embed([Content(text)], Side.QUERY)
        times.append(time.perf_counter() - start)
    return {"model": model.name, **percentiles(times)}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["vectors"] for r in results]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label in (("exact_sqlite_vec", "sqlite-vec exact"), ("cells_bits_rescore", "cells + sign bits + rescore"),
                       ("numpy_brute_force", "NumPy brute force (in RAM)")):
        ax.plot(sizes, [r[key]["p50_ms"] for r in results], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("stored vectors (1536-d)")
    ax.set_ylabel("candidate search p50 (ms)")
    ax.set_title("Stage-1 candidate search, 2-core CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--topic-size", type=int, default=1000, help="stored vectors per synthetic topic")
    parser.add_argument("--model", help="also time query embedding with this model (e.g. smollm2)")
    parser.add_argument("--plot", type=Path, default=Path(__file__).with_name("stage1_latency.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probes", type=int, default=ann.PROBES, help="cells a query reads (default: the index's)")
    parser.add_argument("--assignments", type=int, default=ann.ASSIGNMENTS, choices=(1, 2),
                        help="cells each vector is filed in (default: the index's)")
    parser.add_argument("--mix", type=float, default=0.0,
                        help="lean of each vector towards a second random topic, drawn from [0, MIX)")
    parser.add_argument("--pool", type=int, default=store_module.PREFILTER_POOL,
                        help="Hamming candidates rescored (default: the index's own)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    store_module.PREFILTER_POOL = args.pool  # read at query time by Store.dense
    ann.PROBES, ann.ASSIGNMENTS = args.probes, args.assignments  # read by the prefilter build and queries
    results = [run_size(n, args.dim, args.queries, args.topic_size, args.seed, args.mix) for n in sizes]
    report: dict[str, object] = {"dim": args.dim, "queries": args.queries, "topic_size": args.topic_size,
                                 "prefilter_pool": args.pool, "probes": args.probes,
                                 "assignments": args.assignments, "mix": args.mix, "sizes": results}
    if args.model:
        report["query_embedding"] = embed_times(args.model, args.queries)
    plot(results, args.plot)
    report["plot"] = str(args.plot)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
