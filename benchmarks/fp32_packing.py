"""What packing the language model's linear weights does in fp32 (models/packing.py, a CPU without native bf16):
an interleaved A/B of each kind of call on one loaded model, and on real weights what it does to retrieval.

The model is loaded in fp32 unpacked; each of the layers packing would replace at any width (the product packs only
a language model at least ``packing.FP32_MIN_WIDTH`` wide, from this benchmark's runs) gets its packed copy beside
it (so this process holds those weights twice: a benchmark's cost, not the product's, which frees each original).
Each round runs the same calls with the original layers and with the packed ones, the order alternating between
rounds so that drift falls on both: the sample photos embedded one call each, four 180-word passages in one call, a
query, a top-10 rerank of passages, and an answer over five passages (its prompt's prefill: the first token, and the
decoding rate from 1 and 17 new tokens). With ``--ndcg`` (real weights, e.g. ``smollm2``) it also embeds the
standard-library retrieval set (benchmarks/stdlib_beir.py) both ways: the cosine of each vector to the unpacked one
and the dense nDCG@10 of each. Prints one JSON object.

    python benchmarks/fp32_packing.py MODEL [--rounds 6] [--photos 2] [--calls query,photo,...] [--ndcg]
        [--out FILE]        # JSON of the runs the README cites: benchmarks/fp32_packing/

MODEL: anything ``--model`` takes; a random model at a preset's real size is what ``preset_cost.py --model-dir
DIR`` builds into DIR.
"""

from __future__ import annotations

import argparse
import atexit
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import stdlib_beir
from levers import dense_ndcg

from freeret_tui.engine.evaluation import load_beir
from freeret_tui.engine.models import load_model, packing
from freeret_tui.engine.prompts import Side, answer_prompt
from freeret_tui.engine.types import Content, Kind

PHOTOS = HERE.parent.parent / "shared" / "samples" / "photos"


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _retrieval(model: Any, use: Callable[[str], None]) -> dict[str, Any]:
    """The standard-library set embedded with the original layers and the packed ones: cosines and nDCG@10."""
    work = Path(tempfile.mkdtemp(prefix="freeret-fp32-packing-"))
    atexit.register(shutil.rmtree, work, True)
    stdlib_beir.build(work / "beir")
    data = load_beir(work / "beir" / "corpus.jsonl", work / "beir" / "queries.jsonl", work / "beir" / "qrels.tsv")
    dids, qids = list(data.corpus), list(data.queries)
    passages = [Content(f"{data.corpus[d][0]}\n{data.corpus[d][1]}".strip()) for d in dids]
    queries = [Content(data.queries[q]) for q in qids]
    vectors = {}
    for way in ("plain", "packed"):
        use(way)
        vectors[way] = (model.embed(passages, Side.CANDIDATE, [Kind.TEXT] * len(passages)),
                        model.embed(queries, Side.QUERY, [Kind.TEXT] * len(queries)))
    cosines = np.concatenate([np.sum(a * b, axis=1) for a, b in zip(*vectors.values(), strict=True)])
    return {"passages": len(passages), "queries": len(queries),
            "cosine_packed_to_plain_mean": round(float(cosines.mean()), 6),
            "cosine_packed_to_plain_min": round(float(cosines.min()), 6),
            "dense_ndcg@10": {way: dense_ndcg(q, p, qids, dids, data.qrels) for way, (p, q) in vectors.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--photo-dir", type=Path, default=PHOTOS)
    parser.add_argument("--calls", help="only these calls, comma-separated (default: all)")
    parser.add_argument("--ndcg", action="store_true", help="also the retrieval set both ways (real weights)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    model = load_model(args.model, dtype="float32", pack_weights=False)
    packing.FP32_MIN_WIDTH = 0  # measured at any width: this is what decides the product's threshold
    layers = packing.targets(model._model, torch.float32)
    if not layers or not torch.backends.mkldnn.is_available():
        raise SystemExit("nothing to pack: no fp32 language-model layers, or a torch without oneDNN")
    kinds = {"plain": [getattr(parent, name) for parent, name in layers]}
    kinds["packed"] = [packing.PackedLinear(layer) for layer in kinds["plain"]]

    def use(way: str) -> None:
        for (parent, name), layer in zip(layers, kinds[way], strict=True):
            setattr(parent, name, layer)

    photos = [Content(image=p) for p in sorted(args.photo_dir.iterdir())[: args.photos]]
    if not model.supports_images:
        photos = []
    words = (HERE.parent / "README.md").read_text(encoding="utf-8").split()
    passages = [Content(text=" ".join(words[i * 180 : (i + 1) * 180])) for i in range(10)]
    query = Content(text="how the prefilter reads its blocks")
    enc = model._inputs([answer_prompt("what changed?", passages[:5])])

    def answer(tokens: int) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model._model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                             pad_token_id=model._tok.pad_token_id)
        return run

    calls: dict[str, Callable[[], object]] = {
        "photo": lambda: [model.embed([p], Side.CANDIDATE) for p in photos],
        "passages_4_in_one_call": lambda: model.embed(passages[:4], Side.CANDIDATE),
        "query": lambda: model.embed([query], Side.QUERY),
        "rerank_top10_passages": lambda: model.rerank(query, passages),
        "answer_first_token": answer(1),
        "answer_17_tokens": answer(17),
    }
    if not photos:
        del calls["photo"]
    if args.calls:
        calls = {name: call for name, call in calls.items() if name in args.calls.split(",")}
    rounds: dict[str, dict[str, list[float]]] = {"plain": {}, "packed": {}}
    for n in range(args.rounds):
        for way in ("plain", "packed") if n % 2 == 0 else ("packed", "plain"):
            use(way)
            for name, call in calls.items():
                per = len(photos) if name == "photo" else 1
                rounds[way].setdefault(name, []).append(round(_seconds(call) / per, 4))
    medians = {way: {k: statistics.median(v) for k, v in r.items()} for way, r in rounds.items()}
    decoding = {way: m["answer_17_tokens"] - m["answer_first_token"] for way, m in medians.items()
                if "answer_17_tokens" in m and "answer_first_token" in m}
    result: dict[str, Any] = {
        "model": args.model,
        "machine": platform.processor() or platform.machine(),
        "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "packed_layers": len(layers),
        "answer_prompt_tokens": int(enc["input_ids"].shape[1]),
        "rounds": args.rounds,
        "median_s": medians,
        "answer_tokens_per_s": {way: round(16 / d, 2) if d > 0 else None for way, d in decoding.items()},
        "plain_over_packed": {k: round(v / medians["packed"][k], 3) for k, v in medians["plain"].items()},
        "packed_faster_in_rounds": {k: sum(a > b for a, b in zip(rounds["plain"][k], v, strict=True))
                                    for k, v in rounds["packed"].items()},
        "rounds_s": rounds,
    }
    if args.ndcg:
        result["retrieval"] = _retrieval(model, use)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
