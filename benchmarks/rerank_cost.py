"""Rerank cost: top-k reranking time as a multiple of one candidate's forward pass, with the query's part of the
prompt computed once (the CPU path) against full prompts in batches of 1, 2 and k.

Prints one JSON object. Candidates are real passages (standard-library docstrings, benchmarks/stdlib_beir.py);
each timing is the median of ``--repeats`` runs after one warm-up, all in one process so noise cancels in the
ratios. Beside the times, the token counts give the floor a compute-bound device cannot beat: top-k costs at
least (tokens of the k prompts) / (tokens of one), and with the query's shared prefix computed once, at least
(prefix + the k suffixes) / (tokens of one).

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
from freeret_tui.engine.prompts import Framing, rerank_prompt  # noqa: E402
from freeret_tui.engine.types import Content  # noqa: E402


def _shared_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


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
    model = load_model(args.model, "cpu", dtype=args.dtype)

    turns = [rerank_prompt(query, c, Framing.MC) for c in candidates]
    options = [model._first_token_id(t) for t in ("A", "B")]

    def unshared(batch: int) -> None:
        """Every full prompt run as it is, in padded batches (the path images and accelerators take)."""
        for start in range(0, len(turns), batch):
            model._score(turns[start : start + batch], options)

    def progressive(parts: list[list[Content]]) -> None:
        """What a search does: the top-k in batches of the model's size, a new query each time."""
        model._query_prefix = None
        for part in parts:
            model.rerank(query, part)

    step = model.batch_size = 2  # the CPU default: search reranks in batches of 2 to show hits progressively
    batches = [candidates[i : i + step] for i in range(0, len(candidates), step)]
    one = _median_seconds(lambda: model._score(turns[:1], options), args.repeats)
    shared_all = _median_seconds(lambda: progressive(batches), args.repeats)
    shared_first = _median_seconds(lambda: progressive(batches[:1]), args.repeats)
    by_batch = {b: round(_median_seconds(lambda b=b: unshared(b), args.repeats), 3) for b in (1, 2, len(turns))}
    ids = [model.prompt_token_ids(t) for t in turns]
    tokens = [len(i) for i in ids]
    shared = ids[0]
    for other in ids[1:]:
        shared = _shared_prefix(shared, other)
    prefix = len(shared)  # chat template head, task line, query and "Candidate:"
    print(json.dumps({
        "model": args.model,
        "dtype": model.dtype,
        "k": args.k,
        "prompt_tokens": {"one": tokens[0], "top_k": sum(tokens), "shared_query_prefix": prefix},
        "compute_floor_over_one": round(sum(tokens) / tokens[0], 2),
        "shared_prefix_floor_over_one": round((prefix + sum(t - prefix for t in tokens)) / tokens[0], 2),
        "one_candidate_s": round(one, 3),
        "top_k_shared_prefix_s": round(shared_all, 3),
        "first_batch_shared_prefix_s": round(shared_first, 3),
        "top_k_full_prompts_s_by_batch": by_batch,
        "shared_prefix_over_one": round(shared_all / one, 2),
        "full_prompts_over_one_by_batch": {b: round(t / one, 2) for b, t in by_batch.items()},
    }))


if __name__ == "__main__":
    main()
