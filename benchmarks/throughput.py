"""Indexing throughput against this machine's own matmul roofline, measured in one run so noise cancels.

1. Roofline: GEMM FLOP/s for fp32 and bf16 (square matmuls, torch's default threads).
2. Model: SmolLM2-135M embedding real passages (standard-library docstrings, benchmarks/stdlib_beir.py) for
   each dtype and batch size: useful tokens/s, items/s, and achieved FLOP/s = tokens/s x FLOPs per token
   (2 x the weights the embedding pass runs — every layer but the last MLP, no LM head — plus attention's
   4 x layers x hidden x average context), as a share of the roofline.
3. Pipeline: ``index_files`` on the same passages as .txt files; the share of time outside the model
   (walk, hash, extract, chunk, tokenise, store).
4. Images, for a model that reads them: the photos in ``--images`` (default: shared/samples/photos) embedded per
   dtype and batch size (tokens counted after the processor expands each image into its image tokens; the
   vision tower's FLOPs are not counted, so the share of roofline is a lower bound), and ``index_files`` over
   the folder. ``--model tiny-vlm`` builds the test suite's tiny random Idefics3 (no VLM weights exist here):
   its matmuls are too small for any CPU to run near its roofline, so it measures the overhead around them.

    python benchmarks/throughput.py [--model smollm2|tiny-vlm|SPEC] [--batches 1,2,4] [--dtypes float32,bfloat16]
        [--limit 40] [--images DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests.tiny_models, for --model tiny-vlm

import stdlib_beir  # noqa: E402

from freeret_tui.engine.evaluation import load_beir  # noqa: E402
from freeret_tui.engine.prompts import Side, embedding_prompt  # noqa: E402
from freeret_tui.engine.types import Content, Kind  # noqa: E402


def sync(device: str) -> None:
    """Wait for a GPU's queued work (its calls return before it is done); nothing to wait for on a CPU."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def gemm_flops(dtype_name: str, rows: int, inner: int, cols: int, repeats: int = 3, device: str = "cpu") -> float:
    """FLOP/s of ``F.linear`` (the op the model's projections run) at a (rows x inner) @ (inner x cols) shape, on
    ``device`` (a GPU's products are timed to their end: they run asynchronously)."""
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, dtype_name)
    x = torch.randn(rows, inner, dtype=dtype, device=device)
    w = torch.randn(cols, inner, dtype=dtype, device=device)
    F.linear(x, w)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        F.linear(x, w)
    sync(device)
    return 2 * rows * inner * cols * repeats / (time.perf_counter() - start)


def flops_per_token(model, avg_context: float) -> float:
    """Weights the embedding pass multiplies (2 FLOPs each) plus attention scores and mixing."""
    decoder = model._model.get_decoder()
    layers = decoder.layers
    weights = sum(p.numel() for p in layers.parameters()) - sum(p.numel() for p in layers[-1].mlp.parameters())
    hidden = model._model.config.get_text_config().hidden_size
    return 2.0 * weights + 4.0 * len(layers) * hidden * avg_context


def pipeline(model, folder: Path, work: Path) -> dict[str, float]:
    """``index_files`` over a folder, with the time inside ``model.embed`` counted apart."""
    from freeret_tui.engine.indexer import index_files
    from freeret_tui.engine.scan import walk
    from freeret_tui.engine.store import Store

    work.mkdir(parents=True, exist_ok=True)
    model.batch_size = 2
    spent = 0.0
    embed = model.embed

    def timed_embed(*args, **kwargs):
        nonlocal spent
        start = time.perf_counter()
        try:
            return embed(*args, **kwargs)
        finally:
            spent += time.perf_counter() - start

    model.embed = timed_embed
    start = time.perf_counter()
    index_files(Store(work / "index.db"), model, list(walk([folder])))
    total = time.perf_counter() - start
    model.embed = embed
    return {"batch": 2, "total_s": round(total, 2), "model_s": round(spent, 2),
            "outside_model_share": round(1 - spent / total, 3)}


def embed_runs(model, contents: list[Content], kind: Kind, batches: list[int], roofline: float,
               per_token: float, dtype: str) -> list[dict[str, object]]:
    """Embed ``contents`` once per batch size: tokens/s, items/s and the share of the roofline."""
    turns = [embedding_prompt(c, Side.CANDIDATE, kind) for c in contents]
    tokens = sum(int(model._inputs([t])["attention_mask"].sum()) for t in turns)
    runs = []
    for batch in batches:
        model.batch_size = batch
        model.embed(contents[:batch], Side.CANDIDATE, [kind] * min(batch, len(contents)))  # warm-up
        start = time.perf_counter()
        model.embed(contents, Side.CANDIDATE, [kind] * len(contents))
        seconds = time.perf_counter() - start
        achieved = tokens / seconds * per_token
        runs.append({
            "kind": kind.value, "dtype": dtype, "batch": batch, "items": len(contents), "tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "items_per_s": round(len(contents) / seconds, 2), "achieved_gflops": round(achieved / 1e9, 2),
            "share_of_roofline": round(achieved / roofline, 4),
        })
        print(json.dumps(runs[-1]), file=sys.stderr)
    return runs


def tiny_vlm(work: Path) -> str:
    from tests.tiny_models import build_idefics3

    return str(build_idefics3(work / "tiny-idefics3"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--images", type=Path, default=HERE.parent.parent / "shared" / "samples" / "photos")
    args = parser.parse_args()
    from freeret_tui.engine.models import load_model

    tmp = Path(tempfile.mkdtemp(prefix="freeret-throughput-"))
    stdlib_beir.build(tmp / "beir", limit=args.limit)
    data = load_beir(tmp / "beir" / "corpus.jsonl", tmp / "beir" / "queries.jsonl", tmp / "beir" / "qrels.tsv")
    passages = [text for _title, text in data.corpus.values()]
    folder = tmp / "passages"
    folder.mkdir()
    for n, text in enumerate(passages):
        (folder / f"{n:03d}.txt").write_text(text)
    images = sorted(p for p in args.images.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    spec = tiny_vlm(tmp) if args.model == "tiny-vlm" else args.model
    batches = [int(b) for b in args.batches.split(",")]
    report: dict[str, object] = {"model": args.model, "passages": len(passages), "roofline_flops": {}, "runs": [],
                                 "pipeline": {}}
    for dtype in args.dtypes.split(","):
        model = load_model(spec, "cpu", 1, 16, dtype)
        config = model._model.config.get_text_config()
        # The roofline at the model's own MLP shape (a batch of ~256 tokens): the best its matmuls can do here.
        roofline = gemm_flops(dtype, 256, config.hidden_size, config.intermediate_size)
        report["roofline_flops"][dtype] = roofline
        prompts = [model._render(embedding_prompt(Content(p), Side.CANDIDATE, Kind.TEXT)) for p in passages]
        tokens = sum(len(model._tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        per_token = flops_per_token(model, avg_context=tokens / len(prompts) / 2)
        report["runs"] += embed_runs(model, [Content(p) for p in passages], Kind.TEXT, batches, roofline,
                                     per_token, dtype)
        report["pipeline"][dtype] = {"text": pipeline(model, folder, tmp / dtype / "text")}
        if model.supports_images and images:
            report["runs"] += embed_runs(model, [Content("", image=p) for p in images], Kind.IMAGE, batches,
                                         roofline, per_token, dtype)
            report["pipeline"][dtype]["image"] = pipeline(model, args.images, tmp / dtype / "image")
        report["flops_per_token"] = per_token
        report["tokens"] = tokens
    report["roofline_flops"] = {k: round(v / 1e9, 1) for k, v in report["roofline_flops"].items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
