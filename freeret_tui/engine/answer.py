"""Answers a question over the top hits with the same model, streamed, citing hits as [1], [2]…"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence

from freeret_tui.engine.models.base import Model
from freeret_tui.engine.prompts import answer_prompt
from freeret_tui.engine.types import AnswerChunk, Hit

# A citation of hit n in an answer: "[n]" (the TUI turns each into a link to hit n).
CITATION = re.compile(r"\[(\d+)\]")


def citations(text: str, n_sources: int) -> tuple[int, ...]:
    """Distinct cited source numbers in order of first mention, ignoring numbers outside 1..n_sources."""
    seen = dict.fromkeys(int(m) for m in CITATION.findall(text) if 1 <= int(m) <= n_sources)
    return tuple(seen)


def answer(
    model: Model, question: str, hits: Sequence[Hit], stop: threading.Event | None = None, max_sources: int = 5
) -> Iterator[AnswerChunk]:
    """Stream the answer; the final chunk (``done``) carries the citations found in the whole text."""
    sources = list(hits[:max_sources])
    turn = answer_prompt(question, [h.content() for h in sources])
    text = ""
    for piece in model.generate(turn.system, turn.text, turn.images, stop):
        text += piece
        yield AnswerChunk(piece)
    yield AnswerChunk("", done=True, citations=citations(text, len(sources)))
