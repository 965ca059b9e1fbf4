"""What travels between a served model (``freeret-tui serve``) and its clients, in plain JSON: the engine version,
contents (text, and pictures as PNG bytes the client decoded), vectors (float32 bytes) and the identity every reply
carries. Shared by both sides; imports neither torch nor Ray.

A picture never travels as a path: the client reads it (``pictures.encode_image``) and the server decodes the same
pixels, so a served vector equals a local one and the server never opens a file a client names.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from freeret_tui import __version__
from freeret_tui.engine.types import Content, EncodedImage, Picture

# Vectors depend on the prompts and the pooling code, which may change between releases: client and server must
# run the same version, and an index records which model made its vectors.
ENGINE_VERSION = __version__
# The prefix of a served model's ``--model`` value: serve:http://HOST:PORT/NAME.
SERVE_PREFIX = "serve:"


def picture_to_wire(picture: Picture) -> str:
    from freeret_tui.engine.pictures import encode_image

    data = picture.data if isinstance(picture, EncodedImage) else encode_image(picture).data
    return base64.b64encode(data).decode("ascii")


def picture_from_wire(data: str) -> EncodedImage:
    return EncodedImage(base64.b64decode(data, validate=True))


def content_to_wire(content: Content) -> dict[str, Any]:
    return {"text": content.text, "image": None if content.image is None else picture_to_wire(content.image)}


def content_from_wire(obj: dict[str, Any]) -> Content:
    image = obj.get("image")
    return Content(text=str(obj.get("text", "")), image=None if image is None else picture_from_wire(image))


def contents_from_wire(objs: Sequence[dict[str, Any]]) -> list[Content]:
    return [content_from_wire(o) for o in objs]


def vectors_to_wire(vectors: np.ndarray) -> dict[str, Any]:
    """Exact float32 bytes (JSON numbers would round-trip too, at ~4x the size)."""
    array = np.ascontiguousarray(vectors, dtype="<f4")
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def vectors_from_wire(obj: dict[str, Any]) -> np.ndarray:
    shape = tuple(int(n) for n in obj["shape"])
    return np.frombuffer(base64.b64decode(obj["data"]), dtype="<f4").reshape(shape).astype(np.float32)


def identity(model: Any) -> dict[str, Any]:
    """What every reply carries, so an index never mixes vectors of two models, budgets or engine versions."""
    return {"model": model.name, "image_max_pixels": model.image_max_pixels, "engine": ENGINE_VERSION}
