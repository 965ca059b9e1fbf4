"""Why the language model's forward stays below the CPU's matmul roofline: the default preset's language model
(Qwen2-1.5B's shape: hidden 1536, MLP 8960, 12 heads, 2 KV heads; random bf16 weights) over one photo's worth of
tokens, measured three ways in one run against the same roofline (the best bf16 ``F.linear`` rate of a square
product and the model's own shapes, as benchmarks/preset_cost.py takes it):

1. the matmuls alone, at the layer's own shapes (q, k/v, o, gate/up, down at ``--tokens`` rows): their rates, and
   the rate of a whole layer's matmuls weighted by their FLOPs — what a forward could reach if nothing else ran;
2. the forward itself, eager, under ``torch.compile`` (which fuses the elementwise work) and under
   ``torch.compile`` with inductor's ``freezing`` (weights taken as constants, so oneDNN packs them once into its
   own layout): seconds, share of the roofline, and for freezing the memory it adds (resident set after it
   against before, beside the layers' weights);
3. eager with the linear layers' weights packed by oneDNN once (what the product does on a bf16 CPU,
   freeret_tui/engine/models/packing.py): seconds, share, memory added;
4. torch's profiler over those packed forwards: the share of time in matrix products, the MLP's activation (SiLU
   and the gate product), attention, and the rest.

    python benchmarks/lm_efficiency.py [--layers 28] [--tokens 300] [--repeats 8]  # JSON: benchmarks/lm_efficiency.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import gemm_flops  # noqa: E402

from freeret_tui.engine.models.packing import pack_linears  # noqa: E402

HIDDEN, MLP, HEADS, KV_HEADS = 1536, 8960, 12, 2
# Profiler op names, by what they do in a Qwen2 layer.
_GROUPS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise"),
           "mlp activation": ("aten::silu", "aten::mul"),
           "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                         "aten::_scaled_dot_product_attention_math")}


def _rss() -> int:
    """This process's resident set now, in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _first(call: Any) -> float:
    """Seconds of a first call: for a compiled model, its tracing and compiling (inductor keeps some of it in a
    cache on disk, so a rerun can be quicker)."""
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        call()
    return time.perf_counter() - started


def _timed(call: Any, repeats: int) -> float:
    import torch

    with torch.inference_mode():
        call()
        call()  # two warm-ups: oneDNN picks kernels, compile's first call builds
        started = time.perf_counter()
        for _ in range(repeats):
            call()
    return (time.perf_counter() - started) / repeats


def _model(config: Any) -> Any:
    """The layers with random bf16 weights (seeded: two calls build the same model)."""
    import torch
    from transformers import Qwen2Model

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        return Qwen2Model(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)


def _compiled(model: Any, ids: Any, repeats: int, freezing: bool) -> tuple[float, float, int]:
    """First call, steady seconds and resident memory added of ``torch.compile(model)``, with inductor's freezing
    or without."""
    import torch
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()  # else an earlier graph is reused: dynamo's cache does not key on inductor's settings
    torch._inductor.config.freezing = freezing
    rss_before = _rss()
    compiled = torch.compile(model)
    first_s = _first(lambda: compiled(input_ids=ids, use_cache=False))
    steady_s = _timed(lambda: compiled(input_ids=ids, use_cache=False), repeats)
    added = _rss() - rss_before
    torch._inductor.config.freezing = False
    return first_s, steady_s, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=28, help="decoder layers (Qwen2-1.5B has 28)")
    parser.add_argument("--tokens", type=int, default=300, help="a photo's tokens at the default image budget")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import Qwen2Config

    rows = args.tokens
    head = HIDDEN // HEADS
    shapes = {"q, o": (rows, HIDDEN, HIDDEN), "k, v": (rows, HIDDEN, KV_HEADS * head),
              "gate, up": (rows, HIDDEN, MLP), "down": (rows, MLP, HIDDEN)}
    per_layer = {"q, o": 2, "k, v": 2, "gate, up": 2, "down": 1}  # products of each shape in one layer
    shapes["square 2048"] = (2048, 2048, 2048)
    rates = {name: gemm_flops("bfloat16", *shape, repeats=20) for name, shape in shapes.items()}

    config = Qwen2Config(vocab_size=151_936, hidden_size=HIDDEN, intermediate_size=MLP,
                         num_hidden_layers=args.layers, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS)
    model = _model(config)
    ids = torch.randint(0, 30_000, (1, rows))
    weights = sum(p.numel() for p in model.layers.parameters())
    forward_flops = 2 * weights * rows
    eager_s = _timed(lambda: model(input_ids=ids, use_cache=False), args.repeats)
    compiled_first_s, compiled_s, _ = _compiled(model, ids, args.repeats, freezing=False)
    frozen_first_s, frozen_s, frozen_added = _compiled(model, ids, args.repeats, freezing=True)
    # What the product does on a bf16 CPU (freeret_tui/engine/models/packing.py): the same packing, in eager mode,
    # the original weights replaced; on a model of its own (the compiled graphs above keep the first one's weights).
    model = _model(config)
    rss_before = _rss()
    packed_layers = pack_linears(model, torch.bfloat16)
    packed_added = _rss() - rss_before
    packed_s = _timed(lambda: model(input_ids=ids, use_cache=False), args.repeats)

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:  # packed: the product's forward
        for _ in range(args.repeats):
            model(input_ids=ids, use_cache=False)
    # The rates again, the best of both kept: this shared machine's matmul rate moves within a run (one run read
    # 2.0 TFLOP/s before the forwards where others read 3.0), and a low roofline would inflate every share.
    rates = {name: max(rate, gemm_flops("bfloat16", *shapes[name], repeats=20)) for name, rate in rates.items()}
    square = rates.pop("square 2048")
    roofline = max(square, *rates.values())
    flops = {name: 2 * r * i * c * per_layer[name] for name, (r, i, c) in shapes.items() if name in per_layer}
    layer_rate = sum(flops.values()) / sum(flops[name] / rates[name] for name in flops)
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    shares = {group: sum(self_us.get(op, 0.0) for op in ops) / total for group, ops in _GROUPS.items()}
    shares["the rest (norms, rotary, copies, adds)"] = 1 - sum(shares.values())

    report = {
        "tokens": rows, "layers": args.layers, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "roofline_tflops": round(roofline / 1e12, 3), "square_2048_tflops": round(square / 1e12, 3),
        "matmul_tflops_by_shape": {name: round(rate / 1e12, 3) for name, rate in rates.items()},
        "layer_matmuls_tflops": round(layer_rate / 1e12, 3),
        "layer_matmuls_pct_of_roofline": round(100 * layer_rate / roofline, 1),
        "eager_s": round(eager_s, 4), "eager_pct_of_roofline": round(100 * forward_flops / eager_s / roofline, 1),
        "compiled_s": round(compiled_s, 4), "compiled_first_call_s": round(compiled_first_s, 1),
        "compiled_pct_of_roofline": round(100 * forward_flops / compiled_s / roofline, 1),
        "frozen_s": round(frozen_s, 4), "frozen_first_call_s": round(frozen_first_s, 1),
        "frozen_pct_of_roofline": round(100 * forward_flops / frozen_s / roofline, 1),
        "frozen_added_rss_gb": round(frozen_added / 1e9, 2), "layer_weights_gb": round(weights * 2 / 1e9, 2),
        "packed_linears": packed_layers, "packed_s": round(packed_s, 4),
        "packed_pct_of_roofline": round(100 * forward_flops / packed_s / roofline, 1),
        "packed_added_rss_gb": round(packed_added / 1e9, 2),
        "eager_time_shares_pct": {group: round(100 * share, 1) for group, share in shares.items()},
    }
    text = json.dumps(report, indent=1)
    print(text)
    (HERE / "lm_efficiency.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
