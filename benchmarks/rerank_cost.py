"""Rerank cost: top-k reranking time as a multiple of one candidate's forward pass, batched vs one by one.

Prints one JSON object. Candidates are real passages (standard-library docstrings, benchmarks/stdlib_beir.py);
each timing is the median of ``--repeats`` runs after one warm-up, all in one process so noise cancels in the
ratios.

    python benchmarks/rerank_cost.py [--model smollm2] [--k 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stdlib_beir  # noqa: E402

from freeret_tui.engine.evaluation import load_beir  # noqa: E402
from freeret_tui.engine.models import load_model  # noqa: E402
from freeret_tui.engine.types import Content  # noqa: E402


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first calls pay for lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = stdlib_beir.build(Path(tmp), limit=args.k)
        data = load_beir(out / "corpus.jsonl", out / "queries.jsonl", out / "qrels.tsv")
    query = Content(next(iter(data.queries.values())))
    candidates = [Content(text) for _title, text in data.corpus.values()][: args.k]
    model = load_model(args.model, batch_size=args.k, dtype=args.dtype)

    one = _median_seconds(lambda: model.rerank(query, candidates[:1]), args.repeats)
    batched = _median_seconds(lambda: model.rerank(query, candidates), args.repeats)
    model.batch_size = 1
    serial = _median_seconds(lambda: model.rerank(query, candidates), args.repeats)
    results = {}
    for batch in (2, 4, 8):
        model.batch_size = batch
        results[batch] = {
            "first_batch_s": round(_median_seconds(lambda: model.rerank(query, candidates[:batch]), args.repeats), 3),
            "all_s": round(_median_seconds(lambda: model.rerank(query, candidates), args.repeats), 3),
        }
    print(json.dumps({
        "model": args.model,
        "dtype": model.dtype,
        "k": args.k,
        "one_candidate_s": round(one, 3),
        "top_k_batched_s": round(batched, 3),
        "top_k_one_by_one_s": round(serial, 3),
        "batched_over_one": round(batched / one, 2),
        "one_by_one_over_one": round(serial / one, 2),
        "by_batch_size": results,
    }))


if __name__ == "__main__":
    main()
