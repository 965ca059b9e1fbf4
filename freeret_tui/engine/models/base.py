"""The one small interface every model offers the engine: embed, rerank, generate, and token offsets.

Nothing here imports torch; implementations do, lazily.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Protocol

import numpy as np

from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.types import Content, Kind


class Pooling(str, Enum):
    """Where the embedding is read (both at the last prompt position)."""

    PREMLP = "premlp"  # the paper's choice: residual stream after the last layer's attention, before its MLP
    LAST = "last"  # the last decoder layer's output (after its MLP), kept for the paper's ablation


class Model(Protocol):
    """What the engine asks of a model. Implementations are safe to share between threads (the TUI's search
    workers and its daemon use one model): calls run one at a time."""

    name: str
    dim: int
    supports_images: bool
    device: str
    # The most pixels an image is read at; None for text-only models. An index records it (vectors depend on it).
    image_max_pixels: int | None
    batch_size: int  # items per forward pass (rerank yields after each batch)
    dtype: str  # "float32", "bfloat16", …: reported with measurements

    def embed(
        self,
        items: Sequence[Content],
        side: Side,
        kinds: Sequence[Kind] | None = None,
        pooling: Pooling = Pooling.PREMLP,
    ) -> np.ndarray:
        """L2-normalised float32 vectors, one row per item."""
        ...

    def rerank(self, query: Content, candidates: Sequence[Content], framing: Framing = Framing.MC) -> list[float]:
        """P(match) for each candidate: softmax over the two answer-option logits."""
        ...

    def generate(self, system: str, text: str, images: Sequence[object], stop: threading.Event | None) -> Iterator[str]:
        """Stream the reply to one user turn, piece by piece, until done or ``stop`` is set."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of each token of ``text``; the chunker cuts on these."""
        ...
