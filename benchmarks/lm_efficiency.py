"""Why the language model's forward stays below the CPU's matmul roofline: the default preset's language model
(Qwen2-1.5B's shape: hidden 1536, MLP 8960, 12 heads, 2 KV heads; random bf16 weights) over one photo's worth of
tokens, measured three ways in one run against the same roofline (the best bf16 ``F.linear`` rate of a square
product and the model's own shapes, as benchmarks/preset_cost.py takes it):

1. the matmuls alone, at the layer's own shapes (q, k/v, o, gate/up, down at ``--tokens`` rows): their rates, and
   the rate of a whole layer's matmuls weighted by their FLOPs — what a forward could reach if nothing else ran;
2. the forward itself, eager and under ``torch.compile`` (which fuses the elementwise work): seconds and share of
   the roofline;
3. torch's profiler over eager forwards: the share of time in matrix products, the MLP's activation (SiLU and
   the gate product), attention, and the rest.

    python benchmarks/lm_efficiency.py [--layers 4] [--tokens 300] [--repeats 8]   # JSON: benchmarks/lm_efficiency.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import gemm_flops  # noqa: E402

HIDDEN, MLP, HEADS, KV_HEADS = 1536, 8960, 12, 2
# Profiler op names, by what they do in a Qwen2 layer.
_GROUPS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm"), "mlp activation": ("aten::silu", "aten::mul"),
           "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                         "aten::_scaled_dot_product_attention_math")}


def _timed(call: Any, repeats: int) -> float:
    import torch

    with torch.inference_mode():
        call()
        call()  # two warm-ups: oneDNN picks kernels, compile's first call builds
        started = time.perf_counter()
        for _ in range(repeats):
            call()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (the share per layer is the same)")
    parser.add_argument("--tokens", type=int, default=300, help="a photo's tokens at the default image budget")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import Qwen2Config, Qwen2Model

    rows = args.tokens
    head = HIDDEN // HEADS
    shapes = {"q, o": (rows, HIDDEN, HIDDEN), "k, v": (rows, HIDDEN, KV_HEADS * head),
              "gate, up": (rows, HIDDEN, MLP), "down": (rows, MLP, HIDDEN)}
    per_layer = {"q, o": 2, "k, v": 2, "gate, up": 2, "down": 1}  # products of each shape in one layer
    rates = {name: gemm_flops("bfloat16", *shape, repeats=20) for name, shape in shapes.items()}
    square = gemm_flops("bfloat16", 2048, 2048, 2048, repeats=20)
    roofline = max(square, *rates.values())
    flops = {name: 2 * r * i * c * per_layer[name] for name, (r, i, c) in shapes.items()}
    layer_rate = sum(flops.values()) / sum(flops[name] / rates[name] for name in shapes)

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151_936, hidden_size=HIDDEN, intermediate_size=MLP,
                         num_hidden_layers=args.layers, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS)
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen2Model(config).eval()
    torch.set_default_dtype(torch.float32)
    ids = torch.randint(0, 30_000, (1, rows))
    weights = sum(p.numel() for p in model.layers.parameters())
    forward_flops = 2 * weights * rows
    eager_s = _timed(lambda: model(input_ids=ids, use_cache=False), args.repeats)
    compiled = torch.compile(model)
    compiled_s = _timed(lambda: compiled(input_ids=ids, use_cache=False), args.repeats)

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.repeats):
            model(input_ids=ids, use_cache=False)
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
        "compiled_s": round(compiled_s, 4),
        "compiled_pct_of_roofline": round(100 * forward_flops / compiled_s / roofline, 1),
        "eager_time_shares_pct": {group: round(100 * share, 1) for group, share in shares.items()},
    }
    text = json.dumps(report, indent=1)
    print(text)
    (HERE / "lm_efficiency.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
