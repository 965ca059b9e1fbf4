"""A GGUF file is converted once (models/gguf_cache.py): its copy loads the same model, a damaged or outdated copy
is never used, and a copy that cannot be written costs nothing but the next load's time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from freeret_tui.engine.models import gguf_cache
from freeret_tui.engine.models.presets import ModelSource


def _fake_copy(gguf: Path, dtype: str, files: dict[str, bytes]) -> Path:
    """A converted copy of ``gguf`` as ``keep`` lays one out (for the tests that need no model)."""
    copy = gguf_cache._folder(gguf) / f"{gguf_cache._state(gguf)}-{dtype}"
    copy.mkdir(parents=True)
    for name, data in files.items():
        (copy / name).write_bytes(data)
    sizes = {name: len(data) for name, data in files.items()}
    (copy / gguf_cache._MANIFEST).write_text(json.dumps(sizes), encoding="utf-8")
    return copy


def test_only_a_whole_copy_of_the_files_present_state_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREERET_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    source = ModelSource("model", "gguf", str(gguf), True)
    assert gguf_cache.converted(source, "float32") is source  # nothing converted yet

    copy = _fake_copy(gguf, "float32", {"config.json": b"{}", "chat_template.jinja": b"{{ messages }}"})
    found = gguf_cache.converted(source, "float32")
    assert (found.kind, found.location, found.spec, found.rerank_useful) == ("dir", str(copy), "model", True)
    assert gguf_cache.converted(source, None).location == str(copy)  # config and tokenizer: any dtype's copy
    assert gguf_cache.converted(source, "bfloat16") is source  # weights: only the dtype asked for

    (copy / "chat_template.jinja").unlink()  # gone, the model would load and render its prompts another way
    assert gguf_cache.converted(source, "float32") is source
    assert not copy.exists()  # dropped: the next load converts and writes it again

    _fake_copy(gguf, "float32", {"config.json": b"{}"})
    os.utime(gguf, ns=(1_000_000_000, 1_000_000_000))  # the file changed since it was converted
    assert gguf_cache.converted(source, "float32") is source
    assert gguf_cache.converted(ModelSource("d", "dir", str(tmp_path), True), "float32").kind == "dir"


@pytest.mark.torch
def test_a_gguf_file_is_converted_once_and_its_copy_loads_the_same_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SmolLM2's real weights: the first load converts and keeps a copy, the next loads from it without converting
    with the same weights, bit for bit, and computes the same vectors, rerank scores and answer; a damaged copy is
    converted again."""
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from freeret_tui.engine.models import load_model
    from freeret_tui.engine.prompts import Side
    from freeret_tui.engine.types import Content

    monkeypatch.setenv("FREERET_CACHE_DIR", str(tmp_path / "cache"))
    converting = gguf_utils.load_gguf_checkpoint
    first = load_model("smollm2", device="cpu", max_new_tokens=8)
    (copy,) = (tmp_path / "cache" / "gguf").glob(f"*/*-{first.dtype}")

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GGUF file was converted again")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", no_conversion)
    second = load_model("smollm2", device="cpu", max_new_tokens=8)
    weights, kept = first._model.state_dict(), second._model.state_dict()

    def plain(tensor: torch.Tensor) -> torch.Tensor:  # a layer packed on a bf16 CPU (packing.py) holds a oneDNN one
        return tensor.to_dense() if tensor.is_mkldnn else tensor

    assert weights.keys() == kept.keys()
    assert all(torch.equal(plain(weights[name]), plain(kept[name])) for name in weights)
    # The same weights; what a forward computes from them can differ in the last bits with where its tensors lie
    # in memory (a rerank's scores moved by 4e-7 between two loads of either kind, throwaway runs).
    texts = [Content("A note about the harbour lighthouse."), Content("Ünïcödé — 日本語, tabs\tand\nlines")]
    for side in (Side.QUERY, Side.CANDIDATE):
        assert np.allclose(first.embed(texts, side), second.embed(texts, side), rtol=0, atol=1e-6)
    assert np.allclose(first.rerank(Content("lighthouse"), texts), second.rerank(Content("lighthouse"), texts),
                       rtol=0, atol=1e-5)
    assert "".join(first.generate("", "Say hi.", [])) == "".join(second.generate("", "Say hi.", []))
    assert (second.name, second.dim, second.rerank_useful) == (first.name, first.dim, first.rerank_useful)

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", converting)
    (copy / "chat_template.jinja").unlink()
    third = load_model("smollm2", device="cpu", max_new_tokens=8)
    assert np.allclose(first.embed(texts, Side.QUERY), third.embed(texts, Side.QUERY), rtol=0, atol=1e-6)
    assert (copy / "chat_template.jinja").is_file()  # written again, whole


@pytest.mark.torch
def test_a_copy_that_cannot_be_written_costs_only_the_next_loads_time(
        smollm2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from freeret_tui.engine.models.presets import resolve

    source = resolve("smollm2")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("FREERET_CACHE_DIR", str(blocked))
    assert gguf_cache.keep(source, smollm2.dtype, smollm2._model, smollm2._tok) is None
    assert gguf_cache.converted(source, smollm2.dtype) is source

    monkeypatch.setenv("FREERET_CACHE_DIR", str(tmp_path / "cache"))
    earlier = gguf_cache._folder(Path(source.location)) / f"1-2-transformers0-gguf0-{smollm2.dtype}"
    earlier.mkdir(parents=True)  # a copy of the file as it was before (another size and mtime)
    copy = gguf_cache.keep(source, smollm2.dtype, smollm2._model, smollm2._tok)
    assert copy is not None and gguf_cache.converted(source, smollm2.dtype).location == str(copy)
    assert sorted(p.name for p in copy.parent.iterdir()) == [copy.name]  # the earlier state's copy is gone
