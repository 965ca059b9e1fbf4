"""Model loading: the only package that touches torch/transformers, and only once a model is asked for."""

from __future__ import annotations

from freeret_tui.engine.models.base import Model, Pooling
from freeret_tui.engine.models.presets import PRESETS, resolve
from freeret_tui.engine.models.processors import DEFAULT_IMAGE_MAX_PIXELS
from freeret_tui.engine.models.wire import SERVE_PREFIX
from freeret_tui.errors import ModelLoadError

__all__ = ["DEFAULT_IMAGE_MAX_PIXELS", "PRESETS", "Model", "Pooling", "load_model", "resolve"]


def load_model(
    spec: str,
    device: str = "auto",
    batch_size: int = 0,
    max_new_tokens: int = 256,
    dtype: str = "auto",
    image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS,
    serve_token: str = "",
    pack_weights: bool = True,
) -> Model:
    """Load a preset name, hub id, local directory or .gguf file, or connect to a served model
    (``serve:http://HOST:PORT/NAME``, with ``serve_token``); raises ModelLoadError with the reason.
    ``image_max_pixels``: the most pixels each image is read at (see processors.apply_image_budget); a served
    model has its own, like its device and batch size. ``pack_weights``: let oneDNN pack the linear layers' weights
    on a bf16 CPU (models/packing.py); off only to measure what packing changes."""
    if spec.startswith(SERVE_PREFIX):
        from freeret_tui.engine.models.remote import RemoteModel

        if not serve_token:
            raise ModelLoadError(f"{spec} needs the token its server wrote", [
                "set FREERET_SERVE_TOKEN to it (`freeret-tui serve` prints where it wrote it)"])
        return RemoteModel(spec, serve_token)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise ModelLoadError(
            f"cannot load a model: {err.name} is not installed",
            ["install the project with its model dependencies: `pip install torch==2.13.0 && pip install -e .`"],
        ) from None
    from freeret_tui.engine.models.hf import HFModel

    return HFModel(resolve(spec), device=device, batch_size=batch_size, max_new_tokens=max_new_tokens, dtype=dtype,
                   image_max_pixels=image_max_pixels, pack_weights=pack_weights)
