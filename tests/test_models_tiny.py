"""The HF model layer on tiny random models of three real architectures (Idefics3/SmolVLM, Gemma3, LLaVA)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, embed_with_reference

from freeret_tui.engine.models import Pooling
from freeret_tui.engine.prompts import Framing, Side, rerank_prompt
from freeret_tui.engine.types import Content, Kind


def _decoder_layer(model):
    return model._model.get_decoder().layers[-1]


def test_premlp_vector_is_the_residual_after_attention(tiny_model) -> None:
    """Independently rebuild "layer input + attention branch" and compare with what embed() returns.

    For Gemma the attention branch ends in post_attention_layernorm, so a wrong family row (hooking that norm's
    input) would return the bare attention output and fail here.
    """
    layer = _decoder_layer(tiny_model)
    gemma = hasattr(layer, "pre_feedforward_layernorm")
    vec, expected = embed_with_reference(
        tiny_model, layer.post_attention_layernorm if gemma else layer.self_attn,
        lambda: tiny_model.embed([Content("a cat sleeping on a sofa")], Side.QUERY)[0],
    )
    np.testing.assert_allclose(vec, expected, atol=1e-5)


def test_embeddings_skip_the_lm_head_and_are_unit_vectors(tiny_model) -> None:
    calls: list[int] = []
    handle = tiny_model._model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        texts = tiny_model.embed([Content("rocket launch"), Content("coffee")], Side.CANDIDATE)
        images = tiny_model.embed(
            [Content(image=SAMPLES / "chelsea.png"), Content(image=SAMPLES / "rocket.jpg")],
            Side.CANDIDATE,
            [Kind.IMAGE, Kind.IMAGE],
        )
    finally:
        handle.remove()
    assert calls == []
    for block in (texts, images):
        assert block.shape == (2, tiny_model.dim) and block.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(images[0], images[1], atol=1e-4)


def test_batching_with_left_padding_does_not_change_vectors(tiny_model) -> None:
    short = Content("cat")
    long = Content("a much longer passage about galaxies seen by the hubble telescope in deep field images")
    alone = tiny_model.embed([short], Side.CANDIDATE)[0]
    batched = tiny_model.embed([long, short, long], Side.CANDIDATE)[1]
    np.testing.assert_allclose(alone, batched, atol=1e-4)


def test_pooling_last_differs_from_premlp(tiny_model) -> None:
    item = [Content("coins on a table")]
    premlp = tiny_model.embed(item, Side.CANDIDATE, pooling=Pooling.PREMLP)[0]
    last = tiny_model.embed(item, Side.CANDIDATE, pooling=Pooling.LAST)[0]
    assert not np.allclose(premlp, last, atol=1e-3)


def test_rerank_scores_text_and_image_candidates_from_last_position_only(tiny_model) -> None:
    shapes: list[tuple[int, ...]] = []
    handle = tiny_model._model.get_output_embeddings().register_forward_hook(
        lambda _m, _a, out: shapes.append(tuple(out.shape))
    )
    candidates = [Content("a tabby cat"), Content(image=SAMPLES / "chelsea.png"), Content("stock prices")]
    try:
        probs = tiny_model.rerank(Content("cat"), candidates, Framing.MC)
    finally:
        handle.remove()
    assert len(probs) == 3 and all(0.0 < p < 1.0 for p in probs)
    assert all(shape[1] == 1 for shape in shapes)  # logits for one position per sequence
    one_by_one = [tiny_model.rerank(Content("cat"), [c], Framing.MC)[0] for c in candidates]
    np.testing.assert_allclose(probs, one_by_one, atol=1e-4)
    yesno = tiny_model.rerank(Content("cat"), candidates, Framing.YESNO)
    assert not np.allclose(probs, yesno, atol=1e-4)


def test_rerank_runs_the_query_part_once_on_cpu(tiny_model) -> None:
    """Text candidates: one forward for the prompt's start up to the candidate, kept for the next call with the
    same query; then each candidate's own tokens only. Scores equal those of each full prompt run alone."""
    tiny_model._query_prefix = None
    lengths: list[int] = []
    handle = tiny_model._model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _out: lengths.append(int(args[0].shape[-1]))
    )
    query = Content("cat")
    candidates = [Content("a tabby cat asleep"), Content("stock prices fell"), Content("a cat")]
    try:
        probs = tiny_model.rerank(query, candidates[:2], Framing.MC)
        probs += tiny_model.rerank(query, candidates[2:], Framing.MC)  # the next batch of the same search
    finally:
        handle.remove()
    prompts = [rerank_prompt(query, c, Framing.MC) for c in candidates]
    full = [len(tiny_model._inputs([p])["input_ids"][0]) for p in prompts]
    assert len(lengths) == 4 and lengths[0] > 0
    assert lengths[1:] == [n - lengths[0] for n in full]
    options = [tiny_model._first_token_id(t) for t in ("A", "B")]
    np.testing.assert_allclose(probs, [tiny_model._score([p], options)[0] for p in prompts], atol=1e-4)


def test_generate_streams_and_stops_on_request(tiny_model) -> None:
    """The same prompt runs to max_new_tokens (12) forward passes, or stops after the first token when asked:
    counted at the LM head, which runs once per generated token."""
    calls: list[int] = []
    handle = tiny_model._model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        pieces = list(tiny_model.generate("Be brief.", "Describe <image> now", [SAMPLES / "coffee.png"]))
        full = len(calls)
        stop = threading.Event()
        stop.set()
        list(tiny_model.generate("Be brief.", "Describe <image> now", [SAMPLES / "coffee.png"], stop))
    finally:
        handle.remove()
    assert pieces and full == tiny_model.max_new_tokens
    assert len(calls) - full == 1


def test_each_forward_hands_the_freed_heap_back(idefics3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Embedding, reranking and an answer (also one stopped early) each end by handing what they freed back to
    the system (heap.py); tokenising alone, which runs no forward pass, does not."""
    import freeret_tui.engine.models.hf as hf

    released: list[str] = []
    monkeypatch.setattr(hf, "release_freed", lambda: released.append("x") or True)
    photo = Content(image=SAMPLES / "coffee.png")
    idefics3.embed([photo, Content(text="a cup of coffee")], Side.CANDIDATE)
    assert len(released) == 1
    idefics3.rerank(Content(text="coffee"), [photo, Content(text="tea")])
    assert len(released) == 2
    assert "".join(idefics3.generate("Be brief.", "Describe <image> now", [SAMPLES / "coffee.png"]))
    assert len(released) == 3
    stream = idefics3.generate("Be brief.", "Describe it", [])
    next(stream)
    stream.close()
    assert len(released) == 4
    idefics3.token_spans("Paris is the capital of France.")
    assert len(released) == 4


def test_token_spans_cover_the_text(tiny_model) -> None:
    text = "Paris is the capital of France."
    spans = tiny_model.token_spans(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a < b for a, b in spans)


def test_text_only_model_refuses_images(smollm2) -> None:
    from freeret_tui.errors import UnsupportedInputError

    with pytest.raises(UnsupportedInputError, match="text-only"):
        smollm2.embed([Content(image=Path(SAMPLES / "horse.png"))], Side.CANDIDATE, [Kind.IMAGE])
    # The refusal leaves no hook behind: the same model still embeds and generates.
    assert smollm2.embed([Content("horse")], Side.QUERY).shape == (1, smollm2.dim)
    assert "".join(smollm2.generate("", "Say hi.", []))


def test_a_device_this_machine_lacks_is_one_clear_error(tiny_dirs) -> None:
    """`--device cuda` with a CPU build of torch: torch asserts; the person reads which device and what to do."""
    import torch

    from freeret_tui.engine.models import load_model
    from freeret_tui.errors import ModelLoadError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match="on cuda") as refused:
        load_model(str(tiny_dirs["idefics3"]), device="cuda")
    assert "--device" in refused.value.explain()
