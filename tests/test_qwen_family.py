"""The default model family on tiny random Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5 models, with the CPU torch
and no torchvision: the image-only processor, the pre-MLP hook, M-RoPE under the rerank prefix cache, batches of
differently sized images, the image budget, and search and answers over photos through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from conftest import SAMPLES, embed_with_reference

from freeret_tui.cli import main
from freeret_tui.engine.models import load_model
from freeret_tui.engine.prompts import Framing, Side, rerank_prompt
from freeret_tui.engine.types import Content, Kind

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")
PHOTOS = ("text.png", "astronaut.png", "chelsea.png")  # three aspect ratios: three image-token counts


@pytest.fixture(scope="session")
def qwen_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-qwen")
    return {name: getattr(tiny_models, f"build_{name}")(root / name) for name in FAMILIES}


@pytest.fixture(scope="session", params=FAMILIES)
def qwen(request: pytest.FixtureRequest, qwen_dirs: dict[str, Path]):
    return load_model(str(qwen_dirs[request.param]), device="cpu", batch_size=3, max_new_tokens=8, dtype="float32")


def _image_tokens(model, photo: str) -> int:
    enc = model._inputs([rerank_prompt(Content("q"), Content(image=SAMPLES / photo), Framing.MC)])
    return int((enc["input_ids"] == model._model.config.image_token_id).sum())


def test_processor_without_torchvision_has_no_video_half(qwen) -> None:
    """Without torchvision (CI's CPU torch cannot import one) the processor is the family's own class minus the
    video half, with the PIL image processor; with torchvision, the usual AutoProcessor."""
    from transformers.utils import is_torchvision_available

    assert qwen.supports_images and qwen.image_max_pixels is not None
    if is_torchvision_available():
        assert hasattr(qwen._processor, "video_processor")
        return
    assert not hasattr(qwen._processor, "video_processor")
    assert type(qwen._processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"


@pytest.mark.parametrize("item", [Content("a cat asleep on a sofa"), Content(image=SAMPLES / "rocket.jpg")],
                         ids=["text", "image"])
def test_premlp_vector_is_the_residual_after_attention(qwen, item: Content) -> None:
    """Rebuild "layer input + attention branch" (full or linear attention) at the last position independently."""
    layer = qwen._model.get_decoder().layers[-1]
    attention = getattr(layer, "self_attn", None) or layer.linear_attn
    kind = Kind.IMAGE if item.is_image else Kind.TEXT
    vec, expected = embed_with_reference(qwen, attention, lambda: qwen.embed([item], Side.CANDIDATE, [kind])[0])
    np.testing.assert_allclose(vec, expected, atol=1e-5)


def test_images_of_different_sizes_batch_like_each_alone(qwen) -> None:
    """Different image-token counts in one left-padded batch: M-RoPE positions must follow the padding."""
    counts = [_image_tokens(qwen, p) for p in PHOTOS]
    assert len(set(counts)) == len(PHOTOS), counts
    items = [Content(image=SAMPLES / p) for p in PHOTOS]
    batched = qwen.embed(items, Side.CANDIDATE, [Kind.IMAGE] * 3)
    alone = np.stack([qwen.embed([c], Side.CANDIDATE, [Kind.IMAGE])[0] for c in items])
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_batches_prepared_in_threads_embed_as_in_line(qwen, tmp_path: Path) -> None:
    """On an accelerator the next batches are prepared in threads (``prep_workers``) while one runs: the same
    vectors, in the items' order, as preparing each batch in line; an unreadable photo in a later batch fails the
    call as it does in line, and the next call works."""
    items = [Content(image=SAMPLES / p) for p in (*PHOTOS, "rocket.jpg", "coffee.png")]
    items += [Content("a cat asleep on a sofa"), Content("the receipt for the bike repair")]
    kinds = [Kind.IMAGE] * 5 + [Kind.TEXT] * 2
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert qwen.prep_workers == 0  # a CPU prepares in line
    in_line = qwen.embed(items, Side.CANDIDATE, kinds)
    with pytest.raises(OSError) as alone:
        qwen.embed([*items[:5], Content(image=broken)], Side.CANDIDATE, [Kind.IMAGE] * 6)
    try:
        qwen.prep_workers = 2
        threaded = qwen.embed(items, Side.CANDIDATE, kinds)  # 3 batches of 3: two photo batches, one of text
        with pytest.raises(type(alone.value)):
            qwen.embed([*items[:5], Content(image=broken)], Side.CANDIDATE, [Kind.IMAGE] * 6)
        again = qwen.embed(items, Side.CANDIDATE, kinds)
    finally:
        qwen.prep_workers = 0
    assert qwen._prep_pool is not None  # the threads did the preparing
    np.testing.assert_allclose(threaded, in_line, atol=1e-6)
    np.testing.assert_allclose(again, in_line, atol=1e-6)


def test_rerank_prefix_cache_equals_full_prompts_after_an_image(qwen) -> None:
    """The CPU rerank path runs the query part once and each text candidate's own tokens after it. Qwen's model
    keeps the M-RoPE offset of its last prefill (``rope_deltas``): an image prompt scored in between must not
    shift the positions of the next text candidate's tokens."""
    qwen._query_prefix = None
    query = Content("cat")
    texts = [Content("a tabby cat asleep"), Content("stock prices fell")]
    image = Content(image=SAMPLES / "chelsea.png")
    first = qwen.rerank(query, texts[:1], Framing.MC)
    mixed = qwen.rerank(query, [image, texts[1]], Framing.MC)  # image first: it sets the model's rope_deltas
    options = [qwen._first_token_id(t) for t in ("A", "B")]
    full = [qwen._score([rerank_prompt(query, c, Framing.MC)], options)[0] for c in (texts[0], image, texts[1])]
    np.testing.assert_allclose(first + mixed, full, atol=1e-4)
    assert qwen._query_prefix is not None  # the text candidates did take the cached path


def test_generate_streams_an_answer_over_an_image(qwen) -> None:
    seen: list[int] = []
    handle = qwen._model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _out: seen.append(int((args[0] == qwen._model.config.image_token_id).sum()))
    )
    try:
        pieces = list(qwen.generate("Be brief.", "Describe <image> now", [SAMPLES / "coffee.png"]))
    finally:
        handle.remove()
    assert pieces and "".join(pieces)
    assert seen[0] == _image_tokens(qwen, "coffee.png") > 0  # the photo reached the model as image tokens


def test_image_budget_caps_the_image_tokens(qwen_dirs: dict[str, Path]) -> None:
    """A budget of 56x56 pixels is at most a 2x2 grid of merged 28-pixel patches: at most 4 image tokens."""
    small = load_model(str(qwen_dirs["qwen2_vl"]), device="cpu", dtype="float32", image_max_pixels=56 * 56)
    default = load_model(str(qwen_dirs["qwen2_vl"]), device="cpu", dtype="float32")
    assert 0 < _image_tokens(small, "rocket.jpg") <= 4 < _image_tokens(default, "rocket.jpg")


def test_image_budget_picks_how_many_tiles_smolvlm_splits_into(tiny_dirs: dict[str, Path]) -> None:
    """Idefics3/SmolVLM: the budget is a whole number of tiles a side (the tiny model's are 32 pixels; a 56x56
    budget leaves one, so no splitting), never more than the model's own size."""
    def image_tokens(budget: int) -> int:
        model = load_model(str(tiny_dirs["idefics3"]), device="cpu", dtype="float32", image_max_pixels=budget)
        image_id = model._tok.convert_tokens_to_ids("<image>")
        enc = model._inputs([rerank_prompt(Content("q"), Content(image=SAMPLES / "rocket.jpg"), Framing.MC)])
        return int((enc["input_ids"] == image_id).sum())

    assert image_tokens(56 * 56) == 4 < image_tokens(10**8) == image_tokens(64 * 64)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_search_by_image_and_ask_over_photos(qwen_dirs: dict[str, Path], photos: Path, capsys) -> None:
    """The issue's "done when": the tiny Qwen2-VL through the product's own loader (--model DIR) on the photos."""
    model = str(qwen_dirs["qwen2_vl"])
    code, out, err = _run(capsys, "index", str(photos), "--model", model)
    assert code == 0, err
    assert f"{len(list(SAMPLES.iterdir()))} indexed" in out and "0 skipped" in out

    code, out, err = _run(capsys, "search", "--image", str(photos / "horse.png"), "--json", "--mode", "dense",
                          "--rerank-k", "3")
    assert code == 0, err
    result = json.loads(out)
    assert result["reranked"] and len(result["hits"]) == len(list(SAMPLES.iterdir()))
    assert all(h["kind"] == "image" and h["dense_score"] is not None for h in result["hits"])
    assert all(h["rerank_prob"] is not None for h in result["hits"][:3])

    code, out, err = _run(capsys, "ask", "What is on the table?", "--json", "--rerank-k", "2", "--mode", "dense")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["answer"] and answer["sources"]

    # The index remembers the image budget: another one's vectors are not comparable.
    code, _, err = _run(capsys, "index", str(photos), "--model", model, "--image-max-pixels", "3136")
    assert code == 1 and "image budget" in err and "--reindex" in err
