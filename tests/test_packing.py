"""oneDNN-packed linear weights (freeret_tui/engine/models/packing.py): every layer in bf16 on a bf16 CPU, the
language model's in fp32; a packed model embeds and reranks as the unpacked one does, the output head, tied weights
and (in fp32) the vision tower stay as they were, and nothing is packed where a packed layer would compute something
else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from freeret_tui.engine.models import load_model
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.types import Content, Kind

pytestmark = pytest.mark.torch  # packing.py imports torch: imported inside each test, so the torch-free tier collects


def _packing(dtype: str = "bfloat16"):  # -> the packing module, once this CPU is known to pack in dtype
    import torch

    from freeret_tui.engine.models.devices import cpu_has_native_bf16

    if dtype == "bfloat16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: the product packs nothing in bf16 here")
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: the product packs nothing")
    from freeret_tui.engine.models import packing

    return packing


def _toy(dtype: str = "bfloat16"):  # -> a torch module: a "vision" projection, then a decoder of embeddings and two
    # projections, and an output head tied to the embeddings
    import torch

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(16, 32)
            self.proj = torch.nn.Linear(32, 48)
            self.back = torch.nn.Linear(48, 32, bias=False)

        def forward(self, ids: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
            return self.back(torch.relu(self.proj(self.embed(ids) + seen)))

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision = torch.nn.Linear(8, 32)
            self.decoder = Decoder()
            self.head = torch.nn.Linear(32, 16, bias=False)
            self.head.weight = self.decoder.embed.weight

        def get_decoder(self) -> torch.nn.Module:
            return self.decoder

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.head

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            seen = self.vision(torch.ones(8, dtype=self.vision.weight.dtype))
            return self.head(self.decoder(ids, seen))

    torch.manual_seed(0)
    return Toy().to(getattr(torch, dtype)).eval()


def test_packs_every_projection_but_the_tied_head_and_computes_the_same() -> None:
    packing = _packing()
    import torch

    toy = _toy()
    ids = torch.arange(16).reshape(2, 8)
    with torch.inference_mode():
        before = toy(ids).float()
    assert packing.pack_linears(toy, torch.bfloat16) == 3
    assert all(isinstance(layer, packing.PackedLinear) for layer in (toy.vision, toy.decoder.proj, toy.decoder.back))
    assert type(toy.head) is torch.nn.Linear and toy.head.weight is toy.decoder.embed.weight
    with torch.inference_mode():
        after = toy(ids).float()
    assert torch.allclose(before, after, rtol=1e-2, atol=1e-2)


def test_fp32_packs_a_wide_language_model_only_and_computes_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    packing = _packing("float32")
    import torch

    toy = _toy("float32")
    ids = torch.arange(16).reshape(2, 8)
    with torch.inference_mode():
        before = toy(ids)
    monkeypatch.setattr(packing, "FP32_MIN_WIDTH", 33)  # the toy's decoder is 32 wide: too narrow to pack
    assert packing.pack_linears(toy, torch.float32) == 0
    monkeypatch.setattr(packing, "FP32_MIN_WIDTH", 32)
    releases = []  # each original's freed memory handed back as packing goes, not only after it (the load's peak)
    monkeypatch.setattr(packing, "_RELEASE_EVERY", 1)
    monkeypatch.setattr(packing, "release_freed", lambda: releases.append(1) or True)
    assert packing.pack_linears(toy, torch.float32) == 2
    assert len(releases) == 2
    assert isinstance(toy.decoder.proj, packing.PackedLinear) and isinstance(toy.decoder.back, packing.PackedLinear)
    assert type(toy.vision) is torch.nn.Linear  # a photo's ~1,000 patches: F.linear is faster there
    assert type(toy.head) is torch.nn.Linear and toy.head.weight is toy.decoder.embed.weight
    with torch.inference_mode():
        after = toy(ids)
    assert torch.allclose(before, after, rtol=1e-5, atol=1e-6)
    assert packing.pack_linears(_toy("float16"), torch.float16) == 0  # no other dtype is packed


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_nothing_is_packed_when_a_packed_layer_computes_otherwise(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    packing = _packing(dtype)
    import torch

    monkeypatch.setattr(packing, "FP32_MIN_WIDTH", 0)  # in fp32, the toy's width would be reason enough

    monkeypatch.setattr(packing.PackedLinear, "forward", lambda self, x: torch.zeros(
        *x.shape[:-1], self.out_features, dtype=x.dtype))
    toy = _toy(dtype)
    assert packing.pack_linears(toy, getattr(torch, dtype)) == 0
    assert type(toy.decoder.proj) is torch.nn.Linear and type(toy.decoder.back) is torch.nn.Linear


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_packed_vlm_embeds_and_reranks_as_the_unpacked_one(tiny_dirs: dict[str, Path], dtype: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    packing = _packing(dtype)
    monkeypatch.setattr(packing, "FP32_MIN_WIDTH", 0)  # the tiny model is 64 wide; the default preset 1536
    spec = str(tiny_dirs["idefics3"])
    packed = load_model(spec, device="cpu", dtype=dtype)
    plain = load_model(spec, device="cpu", dtype=dtype, pack_weights=False)
    assert packed.packed_layers > 0 and plain.packed_layers == 0
    vision = [type(m) for m in packed._model.model.vision_model.modules()]
    assert (packing.PackedLinear in vision) == (dtype == "bfloat16")  # in fp32 the vision tower keeps F.linear
    items = [Content(text="a receipt for a bike repair"), Content(image=SAMPLES / "chelsea.png")]
    kinds = [Kind.TEXT, Kind.IMAGE]
    # Equal on this machine (oneDNN ran the same kernels); 1e-3 leaves room for another CPU's. A tiny random model's
    # vectors of unrelated items are within 0.02 of each other, so a cosine would say little.
    difference = np.abs(packed.embed(items, Side.CANDIDATE, kinds) - plain.embed(items, Side.CANDIDATE, kinds))
    assert difference.max() < 1e-3
    query = Content(text="a cat")
    assert np.allclose(packed.rerank(query, items), plain.rerank(query, items), atol=1e-3)


def test_real_weights_give_the_same_vectors_and_scores_packed(smollm2, monkeypatch: pytest.MonkeyPatch) -> None:
    """SmolLM2-135M's real weights, packed as the product loads them (bf16 on a bf16 CPU, else fp32), against the
    same weights unpacked: what retrieval quality rests on does not move (random weights cannot show a numeric error
    that matters)."""
    packing = _packing(smollm2.dtype)
    # In fp32 the product leaves a model as narrow as SmolLM2 (576) unpacked, and packs the default preset's (1536).
    monkeypatch.setattr(packing, "FP32_MIN_WIDTH", 0)
    packed = load_model("smollm2", device="cpu", batch_size=8)  # the fixture's batch size
    plain = load_model("smollm2", device="cpu", batch_size=8, pack_weights=False)
    assert packed.dtype == plain.dtype == smollm2.dtype and packed.packed_layers > 0 == plain.packed_layers
    items = [Content(text=t) for t in ("The cat sat on the mat.", "Quarterly tax return for the bike shop.",
                                       "A recipe for sourdough bread with rye flour.")]
    kinds = [Kind.TEXT] * len(items)
    packed_vectors, plain_vectors = (m.embed(items, Side.CANDIDATE, kinds) for m in (packed, plain))
    # bf16: alone, an item's vector was equal; in a padded batch oneDNN's kernels sum in another order: cosine 0.99990
    # to 0.99993 measured, where bf16 against fp32 is 0.99982 at worst (README, levers) and these items are 0.97
    # apart. fp32: 1 - cosine at most 2.4e-7, rerank scores within 3e-6 (an AVX2 CPU, a throwaway check).
    assert np.sum(packed_vectors * plain_vectors, axis=1).min() > 0.9995
    query = Content(text="baking bread")
    assert np.allclose(packed.rerank(query, items), plain.rerank(query, items), atol=0.01)
