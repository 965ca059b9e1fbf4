"""Model loading: the only package that touches torch/transformers, and only once a model is asked for."""

from __future__ import annotations

from freeret_tui.engine.models.base import Model, Pooling
from freeret_tui.engine.models.presets import PRESETS, resolve

__all__ = ["PRESETS", "Model", "Pooling", "load_model", "resolve"]


def load_model(
    spec: str, device: str = "auto", batch_size: int = 0, max_new_tokens: int = 256, dtype: str = "auto"
) -> Model:
    """Load a preset name, hub id, local directory or .gguf file (raises ModelLoadError with the reason)."""
    from freeret_tui.engine.models.hf import HFModel

    return HFModel(resolve(spec), device=device, batch_size=batch_size, max_new_tokens=max_new_tokens, dtype=dtype)
