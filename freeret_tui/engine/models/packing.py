"""oneDNN-packed weights for a model's linear layers on a CPU: every layer in bf16 (a CPU with AVX512-BF16 or AMX),
the language model's in fp32 (a CPU without bf16).

``F.linear`` hands oneDNN a plain row-major weight, which its bf16 kernels reorder into their blocked layout at each
call. Packed once at load (``torch.ops.mkldnn._reorder_linear_weight``, the op inductor's ``freezing`` emits) and
multiplied with ``torch.ops.mkldnn._linear_pointwise``, the same products skip that work. On this project's 2-core
machine, bf16: Qwen2-1.5B's 28 layers on 300 tokens in 0.40-0.43 s against 0.48-0.51 unpacked
(benchmarks/lm_efficiency.py, two runs); SmolLM2's queries 11 % faster (benchmarks/levers.py); in a throwaway check
one-row products (decoding) took 0.50 ms against 0.76. Results are equal for one item; in padded batches the kernels
sum in another order (cosine 0.9999 on real weights; tests/test_packing.py holds it above 0.9995). Each original
weight is freed as its packed copy replaces it, and the pages of one read from a mapped weight file are dropped
(``_release``), so memory is not held twice: the default preset's peak stays at 1.12x its weights
(benchmarks/preset_cost.py).

In fp32 (a CPU without native bf16, where the product runs fp32) oneDNN's packed products beat ``F.linear`` where
few rows are multiplied and lose where many are: on a 2-core AVX2 EPYC (a throwaway micro-benchmark at the presets'
shapes) one row 1536 -> 8960 took 1.79 ms packed against 2.77, 40 rows 8.9 against 15.2, 300 rows about the same
(0.95-1.05x), 1,024 rows (a photo's patches in a vision tower) 9-14 % longer. So in fp32 only the language model's
layers are packed (a query's prompt and each decoded token are a few rows, a photo's image tokens and a passage a
few hundred; the vision tower always multiplies a photo's ~1,000 patches), and only in a language model at least
``FP32_MIN_WIDTH`` wide. End to end (benchmarks/fp32_packing.py, interleaved on one model, that CPU): the default
preset's (1536 wide) query 2.35 -> 1.90 s, a photo 16.6 -> 15.8 s, four passages 30.9 -> 32.7 s, an answer the same;
SmolLM2's and the fast preset's (576 wide) query 8-11 % faster and decoding 15-30 %, but an answer's first token 10 %
later and a rerank 3-4 % slower: no gain worth having there. Results differ from ``F.linear``'s in the last bits
(SmolLM2's real weights: cosine 1.0 to six digits, the same nDCG@10).

torch is imported at the top: this module is imported only once a model is loaded (models/hf.py).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path
from typing import Any

import torch

from freeret_tui.engine.models.heap import release_freed

# The narrowest language model packed in fp32 (its hidden size): between the two widths measured (above), 576 not
# worth it and 1536 worth it; widths in between were not measured.
FP32_MIN_WIDTH = 1024
# Packed layers between two hand-backs of the originals' freed memory (models/heap.py): one decoder layer's seven
# projections (Qwen2, Llama). The originals of a few MB are freed into the heap, where the packed copies, allocated
# before each original goes, do not all fit: the default preset's fp32 load peaked at 9,607 MiB packed without a
# hand-back, 9,100 with one every 7 layers and 9,146 after each, 9,084 unpacked (a throwaway run each; 8,427 MiB of
# weights).
_RELEASE_EVERY = 7
# What a packed product may differ from F.linear's by, relative to the output's scale, for packing to be kept
# (they were equal in every product measured; a build whose oneDNN computes otherwise is not trusted).
_TOLERANCE = 1e-2


class PackedLinear(torch.nn.Module):
    """A bf16 or fp32 ``nn.Linear`` whose weight oneDNN holds in its own layout. The weight stays a parameter named
    ``weight`` (same shape and dtype), so code that reads its dtype or counts parameters sees the same model; only
    this module's ``forward`` may multiply by it."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.weight = torch.nn.Parameter(packed, requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's memory-mapped weight files (Linux; none elsewhere)."""
    maps = Path("/proc/self/maps")
    if not sys.platform.startswith("linux") or not maps.exists():
        return []
    ranges = []
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith((".safetensors", ".bin", ".gguf")):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _release(weight: torch.Tensor, files: list[tuple[int, int]], libc: ctypes.CDLL) -> None:
    """Drop from this process's resident set the whole pages of ``weight`` that a mapped weight file backs.
    transformers reads safetensors through a memory map that stays open while any tensor of the file lives (the
    embeddings, the norms): packing reads every original weight, so without this their pages stayed resident beside
    the packed copies, and the default preset's peak memory went from 1.14x to 1.94x its weights
    (benchmarks/preset_cost.py). The pages are clean copies of the file: dropping them loses nothing."""
    start = weight.data_ptr()
    end = start + weight.numel() * weight.element_size()
    if not any(low <= start and end <= high for low, high in files):
        return
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_DONTNEED)


def _agrees(linear: torch.nn.Linear, packed: PackedLinear) -> bool:
    """Whether the packed layer computes what the original does, on a random input of a few rows."""
    x = torch.randn(3, linear.in_features, dtype=linear.weight.dtype, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = linear(x).float(), packed(x).float()
    return bool((want - got).abs().max() <= _TOLERANCE * want.abs().max().clamp(min=1.0))


def targets(model: Any, dtype: torch.dtype) -> list[tuple[torch.nn.Module, str]]:
    """The ``nn.Linear`` layers of ``model`` (loaded in ``dtype``) that packing replaces, as (parent, name): in bf16
    every one, in fp32 those of its language model (``get_decoder()``) if it is at least ``FP32_MIN_WIDTH`` wide;
    never the output head or a layer whose weight another module shares (tied embeddings); none in another dtype."""
    if dtype == torch.bfloat16:
        within = model
    elif dtype == torch.float32:
        within = model.get_decoder() if hasattr(model, "get_decoder") else model
        width = getattr(getattr(within, "config", None), "hidden_size", None)
        if width is None:  # no config (a bare module): the width its first layer reads
            width = next((m.in_features for m in within.modules() if type(m) is torch.nn.Linear), 0)
        if width < FP32_MIN_WIDTH:
            return []
    else:
        return []
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    counts: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    return [(parent, name) for parent in within.modules() for name, child in parent.named_children()
            if type(child) is torch.nn.Linear and child is not head and child.weight.dtype == dtype
            and counts[id(child.weight)] == 1]


def pack_linears(model: Any, dtype: torch.dtype) -> int:
    """Replace the ``targets`` of ``model`` (loaded in ``dtype``) with ``PackedLinear`` layers; returns how many were
    packed: 0 where the CPU or the build lacks the kernels, or where the first packed layer does not compute what
    it replaced; fewer than all where oneDNN refuses one (the rest stay as they were)."""
    if not torch.backends.mkldnn.is_available() or (
            dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return 0
    # Names, not the layers themselves: each original must be freed as soon as its packed copy replaces it, so
    # that packing never holds more than one layer twice (and the freed memory goes back every few layers).
    layers = targets(model, dtype)
    files = _file_mappings()
    libc = ctypes.CDLL(None) if files else None  # madvise, found once; only where a weight file is mapped
    packed = 0
    for parent, name in layers:
        original = getattr(parent, name)
        try:
            replacement = PackedLinear(original)
        except RuntimeError:  # a shape or build oneDNN refuses: the layers packed so far are whole, the rest stay
            return packed
        if not packed and not _agrees(original, replacement):
            return 0
        setattr(parent, name, replacement)
        if libc is not None:
            _release(original.weight, files, libc)
        del original, replacement
        packed += 1
        if packed % _RELEASE_EVERY == 0:
            release_freed()
    return packed
