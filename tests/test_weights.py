"""How weights are loaded (freeret_tui/engine/models/weights.py): a load that converts the checkpoint's dtype reads
the safetensors files with pread and builds exactly the model transformers' own loader builds (single file and
shards, image-text and text-only, the generation config included); a load in the stored dtype is transformers'
own, mapped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tiny_models

pytestmark = pytest.mark.torch


def _reference(images: bool, location: Path, dtype):  # -> the model transformers' own loader builds
    import transformers

    auto = transformers.AutoModelForImageTextToText if images else transformers.AutoModelForCausalLM
    return auto.from_pretrained(str(location), dtype=dtype)


def _load_spied(images: bool, location: Path, dtype, monkeypatch: pytest.MonkeyPatch) -> tuple[object, list, int]:
    """``load_weights`` with every safe_open's backend recorded and the Auto classes' loaders counted."""
    import safetensors
    import transformers

    from freeret_tui.engine.models.weights import load_weights

    backends: list[str] = []
    auto_loads = [0]
    real_open = safetensors.safe_open

    def spy_open(*args, **kwargs):
        backends.append(kwargs.get("backend", "mmap"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy_open)
    for auto in (transformers.AutoModelForImageTextToText, transformers.AutoModelForCausalLM):
        real = auto.from_pretrained.__func__

        def counted(cls, *args, _real=real, **kwargs):
            auto_loads[0] += 1
            return _real(cls, *args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", classmethod(counted))
    config = transformers.AutoConfig.from_pretrained(str(location))
    model = load_weights(images, str(location), config, {}, dtype)
    monkeypatch.undo()
    return model, backends, auto_loads[0]


def _same(model, reference) -> None:
    import torch

    mine, theirs = model.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert mine[key].dtype == tensor.dtype, key
        assert torch.equal(mine[key], tensor), key
    assert model.generation_config.to_dict() == reference.generation_config.to_dict()


def _text_only(out: Path) -> Path:
    """A tiny Llama causal LM saved in fp32, with a generation config whose stop ids differ from the config's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**tiny_models._text_config(300), eos_token_id=2)).save_pretrained(out)
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7], "bos_token_id": 1}))
    return out


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "text"])
def test_a_converting_load_reads_with_pread_and_builds_what_transformers_builds(
        family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    location = tmp_path / family
    if family == "text":
        _text_only(location)
    else:
        getattr(tiny_models, f"build_{family}")(location)  # saved in fp32
    images = family != "text"
    model, backends, auto_loads = _load_spied(images, location, torch.bfloat16, monkeypatch)
    assert auto_loads == 0  # not transformers' mapped path
    assert backends and set(backends) == {"pread"}
    _same(model, _reference(images, location, torch.bfloat16))
    if family == "text":
        assert model.generation_config.eos_token_id == [2, 7]


def test_shards_are_all_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from freeret_tui.engine.models.weights import checkpoint_files

    whole = tiny_models.build_qwen2_vl(tmp_path / "whole")
    sharded = tmp_path / "sharded"
    shutil.copytree(whole, sharded)
    (sharded / "model.safetensors").unlink()
    _reference(True, whole, torch.float32).save_pretrained(sharded, max_shard_size="100KB")
    assert len(checkpoint_files(str(sharded))) > 2
    model, backends, _ = _load_spied(True, sharded, torch.bfloat16, monkeypatch)
    assert len(backends) >= len(checkpoint_files(str(sharded)))
    _same(model, _reference(True, whole, torch.bfloat16))


def test_a_load_in_the_stored_dtype_is_transformers_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    location = _text_only(tmp_path / "text")
    model, _, auto_loads = _load_spied(False, location, torch.float32, monkeypatch)
    assert auto_loads == 1
    _same(model, _reference(False, location, torch.float32))
