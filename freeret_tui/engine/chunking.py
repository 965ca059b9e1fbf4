"""Splits long text into overlapping windows of model tokens, each mapped back to its lines.

The chunker never tokenises itself: it takes the model tokenizer's character spans, so a window of N tokens is
exactly N tokens for the model that embeds it.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

Spans = list[tuple[int, int]]

_WORD = re.compile(r"\S+")
_NEWLINE = re.compile("\n")


def word_spans(text: str) -> Spans:
    """Whitespace-word spans: the tokenizer used when no model is loaded (tests, dry runs)."""
    return [m.span() for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class TextWindow:
    start: int  # character offsets into the source text
    end: int
    line_start: int  # 1-based, inclusive
    line_end: int


def chunk_text(text: str, tokenize: Callable[[str], Spans], max_tokens: int, overlap: int) -> list[TextWindow]:
    """Windows of at most ``max_tokens`` tokens, each sharing ``overlap`` tokens with the previous one."""
    if not 0 <= overlap < max_tokens:
        raise ValueError("overlap must be in [0, max_tokens)")
    spans = [s for s in tokenize(text) if s[1] > s[0]]
    if not spans:
        return []
    # Line numbers by bisecting the newline offsets, found once: counting newlines from the start of the text for
    # every window made a 20 MB file quadratic (minutes); this stays linear in the text.
    newlines = [m.start() for m in _NEWLINE.finditer(text)]
    windows: list[TextWindow] = []
    step = max_tokens - overlap
    first = 0
    while True:
        last = min(first + max_tokens, len(spans)) - 1
        start, end = spans[first][0], spans[last][1]
        windows.append(TextWindow(start, end, bisect_left(newlines, start) + 1, bisect_left(newlines, end) + 1))
        if last == len(spans) - 1:
            return windows
        first += step
