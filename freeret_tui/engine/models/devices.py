"""Where a model runs and how it is fed there: the device and dtype, items per forward pass, and how many threads
prepare the next batches. Chosen once per loaded model (``hf.py``); torch is imported inside functions only.
"""

from __future__ import annotations

import os
from typing import Any

from freeret_tui.engine.models.base import Model


def cpu_has_native_bf16() -> bool:
    """Whether this CPU and torch build run bf16 natively through oneDNN (AVX512-BF16, AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # builds without oneDNN
        return False


def choose_device(preference: str = "auto", dtype: str = "auto") -> tuple[str, Any]:
    """(device, dtype), chosen once. bf16 on CUDA where supported and on CPUs with native bf16 (AVX512-BF16,
    AMX): there SmolLM2 embeds 2.3x faster than in fp32 with cosine ≥ 0.9998 to the fp32 vectors
    (benchmarks/levers.py). That holds for GGUF files too, although transformers advises float32 for them: this
    loader de-quantises GGUF weights at load. fp32 on other CPUs, where bf16 is emulated and slower; fp16 on MPS."""
    import torch

    device = preference
    if preference == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype != "auto":
        return device, getattr(torch, dtype)
    if device.startswith("cuda"):
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return device, torch.float16
    return device, torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def default_batch_size(device: str) -> int:
    """Items per forward pass. A CPU is compute-bound already at batch 1, so batching only adds padding:
    benchmarks/rerank_cost.py measured top-10 rerank with SmolLM2 at 1.94 s in batches of 2, 2.59 s in batches
    of 8 and 2.95 s in one batch of 10, and batches of 2 show the first reranked hits after 0.57 s.
    Accelerators need batches to fill up."""
    return 2 if device == "cpu" else 16


def default_prep_workers(device: str) -> int:
    """Threads that prepare the next batches' inputs (decode, resize, patchify, tokenise) while the device runs
    this one. On an H200 with 16 host cores, batches of 16, in two runs (benchmarks/preset_cost_{default,fast}_gpu
    .json and *_gpu_prep_repeat.json): in line a `default` photo took 19-20 ms, 12 of them preparing it, and a
    `fast` photo 25-40 ms, nearly all of it preparing (its GPU work is about 4 ms). `default` then took 11-15 ms
    with 1 or 2 threads and 14-15 with 4 (it waits on the GPU); `fast` needed 4: 13-15 ms, against 17-19 with 2.
    A core is left for the thread that drives the device (a reasoned cap: hosts of under 5 cores were not
    measured). On a CPU the forward keeps every core busy and preparing a photo is about 1 % of its time: none."""
    if device == "cpu":
        return 0
    return max(1, min(PREP_WORKERS, (os.cpu_count() or 2) - 1))


PREP_WORKERS = 4


# A language model at least this wide indexes a photo in seconds where it computes in fp32 on a CPU: the default
# preset (1,536 wide) took 12.8 s a photo and `fast` (576 wide) 2.06 s on a 2-core AMD EPYC without bf16 (README,
# what it costs: the fp32 table). So the person hears that a smaller preset exists.
SLOW_FP32_WIDTH = 1024


def speed_hint(model: Model) -> str | None:
    """One line for the person when ``model`` indexes slowly here and ``--model fast`` would not: a language model
    at least ``SLOW_FP32_WIDTH`` wide computing in fp32 on this machine's CPU (no native bf16, or asked for);
    None otherwise (a GPU, a bf16 CPU, a small model, a served one)."""
    if model.device != "cpu" or model.dtype != "float32" or model.dim < SLOW_FP32_WIDTH:
        return None
    return ("this model computes in fp32 here (a CPU without native bf16, or --dtype float32): a photo takes seconds "
            "to index (the default preset: ~13 s on 2 cores); `--model fast` indexes about 6x faster, at lower quality")
