"""A deterministic stand-in for a multimodal model, implementing the whole ``Model`` protocol without torch.

Not a mock of FreeRet: it ranks by shared words so that engine tests can check real behaviour (a passage with the
query's words comes first, a filter removes what it should, citations reach the screen) in milliseconds.
- embed: the normalised sum of one hash-seeded random vector per word (an image's words: its file name, plus a
  vector seeded by its decoded pixels: like a real model, it reads every image and PDF page when it embeds),
  so cosine similarity grows with shared words;
- rerank: P(match) from the share of the query's words the candidate contains (0.05 to 0.95);
- generate: a canned answer, streamed word by word, citing source [1]; it stops when asked.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from freeret_tui.engine.chunking import word_spans
from freeret_tui.engine.models.base import Pooling
from freeret_tui.engine.pictures import load_image
from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.types import Content, Kind, PageImage

_WORD = re.compile(r"[a-z0-9]+")
ANSWER = "According to the first source, this is the answer [1]."


def _words(content: Content) -> list[str]:
    words = _WORD.findall(content.text.lower())
    if isinstance(content.image, PageImage):
        words += _WORD.findall(Path(content.image.pdf).stem.lower())
    elif content.image is not None:
        words += _WORD.findall(Path(content.image).stem.lower())
    return words


def _seeded(key: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class FakeModel:
    """Deterministic, torch-free, and honest about what it is (``name`` says fake)."""

    def __init__(self, name: str = "fake-model", dim: int = 64, supports_images: bool = True):
        self.name = name
        self.dim = dim
        self.supports_images = supports_images
        self.device = "cpu"
        self.dtype = "float32"
        self.batch_size = 4
        self.image_max_pixels: int | None = 200_704 if supports_images else None
        self.generated: list[str] = []  # the prompts generate() was given (tests read them)
        self.before_embed: list[Callable[[], None]] = []  # run at the start of each embed() (tests break files)

    def _vector(self, content: Content) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in _words(content):
            vector += _seeded(word, self.dim)
        if content.image is not None:
            pixels = np.asarray(load_image(content.image, max_side=16))
            vector += 0.5 * _seeded(hashlib.sha256(pixels.tobytes()).hexdigest(), self.dim)
        if not vector.any():
            vector = _seeded("<empty>", self.dim)
        return vector / np.linalg.norm(vector)

    def embed(self, items: Sequence[Content], side: Side, kinds: Sequence[Kind] | None = None,
              pooling: Pooling = Pooling.PREMLP) -> np.ndarray:
        from freeret_tui.errors import UnsupportedInputError

        for hook in self.before_embed:
            hook()
        if not self.supports_images and any(c.is_image for c in items):
            raise UnsupportedInputError(f"model {self.name!r} is text-only and cannot read images")
        return np.stack([self._vector(c) for c in items]) if items else np.empty((0, self.dim), np.float32)

    def rerank(self, query: Content, candidates: Sequence[Content], framing: Framing = Framing.MC) -> list[float]:
        asked = set(_words(query))
        return [0.05 + 0.9 * len(asked & set(_words(c))) / max(len(asked), 1) for c in candidates]

    def generate(self, system: str, text: str, images: Sequence[object],
                 stop: threading.Event | None = None) -> Iterator[str]:
        self.generated.append(text)
        for piece in re.findall(r"\S+\s*", ANSWER):
            if stop is not None and stop.is_set():
                return
            yield piece

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return word_spans(text)


def fake_session():  # -> Session (imported here, not at the top: the model stays alone)
    """A Session over the test's data dir with a FakeModel loaded, rerank off."""
    from freeret_tui.engine.session import Session, SessionConfig
    from freeret_tui.settings import data_dir

    session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False), loader=lambda _c: FakeModel())
    session.load_model()
    return session


def indexed_notes(folder: Path, count: int):  # -> Session
    """``count`` short notes written to ``folder`` and indexed by a Session over a FakeModel in the test's data dir:
    enough vectors for the prefilter's cells once a test lowers PREFILTER_MIN."""
    folder.mkdir()
    for n in range(count):
        (folder / f"{n}.txt").write_text(f"note {n} about topic {n % 7} and colour {n % 11}")
    session = fake_session()
    session.index([folder])
    return session
