"""How a model's weights get from its files into memory: ``read_and_load`` finds them (a GGUF file's converted copy
first, gguf_cache.py) with their reader, and ``load_weights`` reads them, through transformers' own loader, except
where the load converts the checkpoint's dtype, where the safetensors files are read with ``pread`` instead of
being memory-mapped. transformers and safetensors are imported inside functions only.

Why: transformers maps each safetensors file and copies every tensor out of the mapping into the model's dtype.
Every page of the mapping it copied from stays in this process's resident set until the load ends, so a
converting load holds the file and the converted weights at once. The default preset's bf16 file loaded in fp32
(a CPU without bf16) peaked at 13,069 MiB, 4,324 of them the mapped file, and at 9,120 read with ``pread``
(8,427 MiB of weights; ``benchmarks/preset_cost.py --load-only``, JSON in benchmarks/load_fp32/). Where the dtypes
match, mapping costs nothing: the tensors stay views of the file's pages, shared with every process that maps it
and faulted in only when read, so that path is left as it is.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from freeret_tui.engine.models import gguf_cache
from freeret_tui.engine.models.presets import ModelSource
from freeret_tui.engine.models.reader import Reader

# safetensors' names of the float dtypes a model's weights are stored in; a checkpoint in any other (quantised
# integers, float8) is left to transformers, which knows its quantisation.
_FLOAT_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def checkpoint_files(location: str) -> list[Path]:
    """The safetensors files transformers would read from a model directory: the shards its index names, else
    ``model.safetensors``; none where it reads something else (a GGUF file, PyTorch pickles)."""
    root = Path(location)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        return [root / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = root / "model.safetensors"
    return [single] if single.is_file() else []


def _bulk_dtype(slices: Iterable[Any]) -> str | None:
    """The dtype that most of a checkpoint's values are stored in (torch's name), from its lazy slices (the files'
    headers only); None where it is not a plain float."""
    counts: dict[str, int] = {}
    for piece in slices:
        counts[piece.get_dtype()] = counts.get(piece.get_dtype(), 0) + math.prod(piece.get_shape())
    return _FLOAT_DTYPES.get(max(counts, key=lambda name: counts[name])) if counts else None


def load_weights(images: bool, location: str, config: Any, kwargs: dict[str, Any], dtype: Any) -> Any:
    """The model for ``config`` (an image-text-to-text model if ``images``, else a causal LM), with the weights at
    ``location`` (``kwargs``: a GGUF file's name) in ``dtype``."""
    import copy

    import transformers
    from safetensors import safe_open
    from transformers.models.auto import modeling_auto

    files = [] if kwargs or getattr(config, "quantization_config", None) else checkpoint_files(location)
    with contextlib.ExitStack() as opened:
        handles = [opened.enter_context(safe_open(str(path), framework="pt", backend="pread")) for path in files]
        # Lazy slices, as transformers makes of a mapped file: each tensor is read when its parameter is filled.
        state = {key: handle.get_slice(key) for handle in handles for key in handle.keys()}
        if _bulk_dtype(state.values()) not in (None, str(dtype).removeprefix("torch.")):
            # The model's own class, not the Auto class, which deep-copies its arguments (a slice cannot be copied).
            mapping = (modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING if images
                       else modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING)
            model = mapping[type(config)].from_pretrained(None, config=copy.deepcopy(config), state_dict=state,
                                                          dtype=dtype)
            if (Path(location) / "generation_config.json").is_file():  # a path load reads it too (Qwen's stop ids)
                model.generation_config = transformers.GenerationConfig.from_pretrained(location)
            return model
    auto = transformers.AutoModelForImageTextToText if images else transformers.AutoModelForCausalLM
    return auto.from_pretrained(location, dtype=dtype, **kwargs)


def read_and_load(source: ModelSource, image_max_pixels: int, torch_dtype: Any) -> tuple[Reader, Any]:
    """The model's reader and weights. A GGUF file comes from its converted copy where one is kept (gguf_cache.py),
    else is converted, and the copy kept for the next load."""
    from safetensors import SafetensorError

    dtype = str(torch_dtype).removeprefix("torch.")
    kept = gguf_cache.converted(source, dtype)
    if kept is not source:
        try:
            reader = Reader(kept, image_max_pixels)
            return reader, load_weights(reader.supports_images, reader.location, reader.config, reader.kwargs,
                                        torch_dtype)
        except (OSError, ValueError, KeyError, SafetensorError):  # a damaged copy: the file converts again
            gguf_cache.forget(kept)
    reader = Reader(source, image_max_pixels)
    model = load_weights(reader.supports_images, reader.location, reader.config, reader.kwargs, torch_dtype)
    if source.kind == "gguf":
        gguf_cache.keep(source, dtype, model, reader.tok)
    return reader, model
