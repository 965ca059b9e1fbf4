"""What reads a model's inputs without loading its weights: where its files are (hub cache, directory, GGUF),
its config, its tokenizer (left-padded) and, for a vision model, its processor with the image budget. ``HFModel``
builds on it; a bulk index's extraction workers need only this (``model_facts``). transformers is imported inside
functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freeret_tui.engine.models import gguf_cache
from freeret_tui.engine.models.hub import hub_snapshot
from freeret_tui.engine.models.presets import ModelSource, resolve
from freeret_tui.engine.models.processors import DEFAULT_IMAGE_MAX_PIXELS, apply_image_budget, load_processor
from freeret_tui.errors import ModelLoadError


def token_spans_with(tok: Any, text: str) -> list[tuple[int, int]]:
    """Character (start, end) of each of ``tok``'s tokens of ``text``."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(int(a), int(b)) for a, b in enc["offset_mapping"]]


class Reader:
    """What reads a model's inputs, without its weights: config, tokenizer (left-padded) and, for a vision model,
    the processor with its image budget. A bulk index's extraction workers need only this (``weights`` False: a
    hub model's weights are not fetched)."""

    def __init__(self, source: ModelSource, image_max_pixels: int, weights: bool = True) -> None:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        if source.kind == "gguf":
            path = Path(source.location)
            self.kwargs: dict[str, Any] = {"gguf_file": path.name}
            self.location = str(path.parent)
        else:
            self.kwargs = {}
            self.location = hub_snapshot(source.location, weights) if source.kind == "hub" else source.location
        self.config = transformers.AutoConfig.from_pretrained(self.location, **self.kwargs)
        self.supports_images = self.config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        self.processor: Any = None
        if self.supports_images:
            self.processor = load_processor(self.location, self.config)
            apply_image_budget(self.processor, image_max_pixels)
            self.tok = self.processor.tokenizer
        else:
            self.tok = transformers.AutoTokenizer.from_pretrained(self.location, **self.kwargs)
        # Left padding puts every prompt's last token at position -1, where embeddings and scores are read.
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token


@dataclass(frozen=True)
class ModelFacts:
    """A model as an index records it, and its tokenizer (for chunking), read without loading its weights."""

    name: str
    dim: int
    supports_images: bool
    image_max_pixels: int | None
    tokenizer: Any


def model_facts(spec: str, image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS) -> ModelFacts:
    """What ``HFModel(resolve(spec), image_max_pixels=…)`` would report, from its config and tokenizer only."""
    source = resolve(spec)
    try:
        reader = Reader(gguf_cache.converted(source, None), image_max_pixels, weights=False)
    except (ImportError, OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not read model {spec!r}: {' '.join(str(err).split())}") from None
    return ModelFacts(source.spec, int(reader.config.get_text_config().hidden_size), reader.supports_images,
                      image_max_pixels if reader.supports_images else None, reader.tok)
