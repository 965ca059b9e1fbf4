"""The processor of a multimodal model (tokenizer + image processor + image-token expansion) and its image budget.

Most families load with ``AutoProcessor``. The Qwen-VL processors (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5) also
carry a video processor that only exists with torchvision, so ``AutoProcessor`` fails without it even though
images need nothing but PIL and NumPy (transformers ships ``Qwen2VLImageProcessorPil``). freeret-tui never reads
video, so when torchvision is missing the same processor class is built without its video half, from the same
files a hub snapshot has (preprocessor_config.json, the tokenizer files, chat_template.json/.jinja). With
torchvision present ``AutoProcessor`` runs as usual (and picks the torchvision image processor).

The image budget caps the pixels each image is shown at, and so the image tokens the model reads — the main cost
of embedding a photo. It lowers, never raises, what the model's own processor would do.
"""

from __future__ import annotations

import math
from typing import Any

# The default image budget: 256 Qwen2-VL image tokens (each covers 28×28 pixels). Qwen's own processor allows up to
# 12.8 MP (16,384 tokens), which on a CPU costs minutes per photo.
DEFAULT_IMAGE_MAX_PIXELS = 256 * 28 * 28


def _torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def _image_only(processor_class: type) -> type:
    """``processor_class`` with only an image processor and a tokenizer as its parts.

    ``ProcessorMixin`` reads a processor's parts from its ``__init__`` signature, so this signature names no video
    processor: ``from_pretrained`` loads none, and the parent's own ``__init__`` still sets up the image tokens.
    The parent passes its (absent) video processor on as a third positional part, which ``ProcessorMixin`` pairs
    with the parts this signature names and so drops (tests/test_qwen_family.py loads every family this way).
    """

    class ImageOnlyProcessor(processor_class):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                     **kwargs: Any) -> None:
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                             chat_template=chat_template, **kwargs)

    ImageOnlyProcessor.__name__ = ImageOnlyProcessor.__qualname__ = f"{processor_class.__name__}ImageOnly"
    return ImageOnlyProcessor


def load_processor(location: str, config: Any) -> Any:
    """The processor for the model at ``location`` whose config is ``config``."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    processor_class = PROCESSOR_MAPPING.get(type(config), None)
    needs_video = processor_class is not None and "video_processor" in processor_class.get_attributes()
    if needs_video and not _torchvision_available():
        return _image_only(processor_class).from_pretrained(location)
    return transformers.AutoProcessor.from_pretrained(location)


def apply_image_budget(processor: Any, max_pixels: int) -> None:
    """Cap the pixels (hence image tokens) ``processor`` shows the model per image at ``max_pixels``.

    Qwen-VL (dynamic resolution): its ``longest_edge`` size *is* a pixel count. Idefics3/SmolVLM (image splitting):
    the longest side is a whole number of tiles, so the budget picks how many (at least one: no splitting). Fixed-
    resolution families (LLaVA, Gemma3) read every image at one size; the engine's downscaling still bounds decoding.
    """
    images = getattr(processor, "image_processor", None)
    if images is None:
        return
    size = dict(getattr(images, "size", None) or {})
    tile = (getattr(images, "max_image_size", None) or {}).get("longest_edge")
    if hasattr(images, "merge_size") and size.get("longest_edge"):
        size["longest_edge"] = min(int(size["longest_edge"]), max_pixels)
        size["shortest_edge"] = min(int(size.get("shortest_edge") or 0), size["longest_edge"])
        images.size = size
    elif tile and getattr(images, "do_image_splitting", False) and size.get("longest_edge"):
        tiles = max(1, math.isqrt(max_pixels) // int(tile))
        size["longest_edge"] = min(int(size["longest_edge"]), tiles * int(tile))
        images.size = size
