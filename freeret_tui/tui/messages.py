"""What the search screen's thread workers send back to it: hits, pieces of an answer, the model's arrival. Hits
and answer pieces carry their query's serial number, so the screen drops one that a newer query made stale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from freeret_tui.tui.backend import ShownHit


@dataclass
class Hits(Message):
    serial: int
    hits: list[ShownHit]
    thumbs: dict[int, Any]
    stage: str  # "words" (before the query vector), "offline" (words only: model server gone), "candidates", …


@dataclass
class AnswerPiece(Message):
    serial: int
    text: str
    done: bool = False
    citations: tuple[int, ...] = ()
    stopped: bool = False


@dataclass
class ModelReady(Message):
    note: str
    hint: str | None = None  # said once, when the model will index slowly here (devices.speed_hint)
