"""oneDNN-packed weights for a model's linear layers on a CPU with native bf16 (AVX512-BF16, AMX).

``F.linear`` hands oneDNN a plain row-major weight, which it reorders into its blocked layout on every call. Packed
once at load (``torch.ops.mkldnn._reorder_linear_weight``, the op inductor's ``freezing`` emits) and multiplied
with ``torch.ops.mkldnn._linear_pointwise``, the same products skip that work: on this project's 2-core machine,
bf16, a 300x1536 @ 1536x8960 product took 2.45 ms against 3.41, a one-row product 0.50 against 0.76 (so decoding
gains too), with results equal to ``F.linear``'s; Qwen2-1.5B's 28 layers on 300 tokens 0.41 s against 0.63
(benchmarks/preset_cost.py measures it per preset). The packed weight replaces the original, so memory does not
grow. In fp32 the packed one-row product was slower (0.98 ms against 0.88) and its results differ in the last
bits, so only bf16 is packed.

torch is imported at the top: this module is imported only once a model is loaded (models/hf.py).
"""

from __future__ import annotations

from typing import Any

import torch

# What a packed product may differ from F.linear's by, relative to the output's scale, for packing to be kept
# (they were equal in every product measured; a build whose oneDNN computes otherwise is not trusted).
_TOLERANCE = 1e-2


class PackedLinear(torch.nn.Module):
    """A bf16 ``nn.Linear`` whose weight oneDNN holds in its own layout. The weight stays a parameter named
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


def _agrees(linear: torch.nn.Linear, packed: PackedLinear) -> bool:
    """Whether the packed layer computes what the original does, on a random input of a few rows."""
    x = torch.randn(3, linear.in_features, dtype=linear.weight.dtype, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = linear(x).float(), packed(x).float()
    return bool((want - got).abs().max() <= _TOLERANCE * want.abs().max().clamp(min=1.0))


def pack_linears(model: Any) -> int:
    """Replace every bf16 ``nn.Linear`` of ``model`` with a ``PackedLinear``, except the output head and any layer
    whose weight another module shares (tied embeddings); returns how many were packed: 0 where the CPU or the
    build lacks oneDNN's bf16 kernels, or where the first packed layer does not compute what it replaced; fewer
    than all where oneDNN refuses one (the rest stay as they were)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    counts: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    # Names, not the layers themselves: each original must be freed as soon as its packed copy replaces it, so
    # that packing never holds more than one layer twice (and the freed memory takes the next packed weight).
    targets = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear and child is not head and child.weight.dtype == torch.bfloat16
               and counts[id(child.weight)] == 1]
    del counts, head
    packed = 0
    for parent, name in targets:
        original = getattr(parent, name)
        try:
            replacement = PackedLinear(original)
        except RuntimeError:  # a shape or build oneDNN refuses: the layers packed so far are whole, the rest stay
            return packed
        if not packed and not _agrees(original, replacement):
            return 0
        setattr(parent, name, replacement)
        del original, replacement
        packed += 1
    return packed
