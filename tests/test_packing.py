"""oneDNN-packed linear weights on a bf16 CPU (freeret_tui/engine/models/packing.py): a packed model embeds and
reranks as the unpacked one does, the output head and tied weights stay as they were, and nothing is packed where
a packed layer would compute something else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from freeret_tui.engine.models import load_model
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.types import Content, Kind

pytestmark = pytest.mark.torch  # packing.py imports torch: imported inside each test, so the torch-free tier collects


def _packing():  # -> the packing module, once this CPU is known to pack
    from freeret_tui.engine.models.devices import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: the product packs nothing here")
    from freeret_tui.engine.models import packing

    return packing


def _toy():  # -> a torch module: embeddings, two projections, an output head tied to the embeddings
    import torch

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(16, 32)
            self.proj = torch.nn.Linear(32, 48)
            self.back = torch.nn.Linear(48, 32, bias=False)
            self.head = torch.nn.Linear(32, 16, bias=False)
            self.head.weight = self.embed.weight

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.head

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.back(torch.relu(self.proj(self.embed(ids)))))

    torch.manual_seed(0)
    return Toy().to(torch.bfloat16).eval()


def test_packs_every_projection_but_the_tied_head_and_computes_the_same() -> None:
    packing = _packing()
    import torch

    toy = _toy()
    ids = torch.arange(16).reshape(2, 8)
    with torch.inference_mode():
        before = toy(ids).float()
    assert packing.pack_linears(toy) == 2
    assert isinstance(toy.proj, packing.PackedLinear) and isinstance(toy.back, packing.PackedLinear)
    assert type(toy.head) is torch.nn.Linear and toy.head.weight is toy.embed.weight
    with torch.inference_mode():
        after = toy(ids).float()
    assert torch.allclose(before, after, rtol=1e-2, atol=1e-2)


def test_nothing_is_packed_when_a_packed_layer_computes_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    packing = _packing()
    import torch

    monkeypatch.setattr(packing.PackedLinear, "forward", lambda self, x: torch.zeros(
        *x.shape[:-1], self.out_features, dtype=x.dtype))
    toy = _toy()
    assert packing.pack_linears(toy) == 0
    assert type(toy.proj) is torch.nn.Linear and type(toy.back) is torch.nn.Linear


def test_a_packed_vlm_embeds_and_reranks_as_the_unpacked_one(tiny_dirs: dict[str, Path]) -> None:
    _packing()
    spec = str(tiny_dirs["idefics3"])
    packed = load_model(spec, device="cpu", dtype="bfloat16")
    plain = load_model(spec, device="cpu", dtype="bfloat16", pack_weights=False)
    assert packed.packed_layers > 0 and plain.packed_layers == 0
    items = [Content(text="a receipt for a bike repair"), Content(image=SAMPLES / "chelsea.png")]
    kinds = [Kind.TEXT, Kind.IMAGE]
    # Equal on this machine (oneDNN ran the same kernels); 1e-3 leaves room for another CPU's. A tiny random model's
    # vectors of unrelated items are within 0.02 of each other, so a cosine would say little.
    difference = np.abs(packed.embed(items, Side.CANDIDATE, kinds) - plain.embed(items, Side.CANDIDATE, kinds))
    assert difference.max() < 1e-3
    query = Content(text="a cat")
    assert np.allclose(packed.rerank(query, items), plain.rerank(query, items), atol=1e-3)


def test_real_weights_give_the_same_vectors_and_scores_packed(smollm2) -> None:
    """SmolLM2-135M's real weights, packed as the product loads them, against the same weights unpacked: what
    retrieval quality rests on does not move (random weights cannot show a numeric error that matters)."""
    _packing()
    plain = load_model("smollm2", device="cpu", batch_size=8, pack_weights=False)  # the fixture's batch size
    assert smollm2.dtype == plain.dtype == "bfloat16" and smollm2.packed_layers > 0 == plain.packed_layers
    items = [Content(text=t) for t in ("The cat sat on the mat.", "Quarterly tax return for the bike shop.",
                                       "A recipe for sourdough bread with rye flour.")]
    kinds = [Kind.TEXT] * len(items)
    packed_vectors, plain_vectors = (m.embed(items, Side.CANDIDATE, kinds) for m in (smollm2, plain))
    # Alone, an item's vector was equal; in a padded batch oneDNN's kernels sum in another order: cosine 0.99990 to
    # 0.99993 measured, where bf16 against fp32 is 0.99982 at worst (README, levers) and these items are 0.97 apart.
    assert np.sum(packed_vectors * plain_vectors, axis=1).min() > 0.9995
    query = Content(text="baking bread")
    assert np.allclose(smollm2.rerank(query, items), plain.rerank(query, items), atol=0.01)
