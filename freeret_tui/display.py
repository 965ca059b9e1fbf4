"""How text from the filesystem and from documents reaches a screen: as plain text with every control character
made visible. A file name or a passage holding ESC sequences must not drive the terminal (clear it, set its
title, write its clipboard through OSC 52), and bidirectional overrides must not disguise a name. Used by the CLI
and the TUI alike; Textual markup is avoided separately (rich ``Text`` objects, ``markup=False``).
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, zero-width and bidirectional formatting characters, line/paragraph separators, the
# byte-order mark, and lone surrogates (the bytes of a file name that is not UTF-8, as Python decodes them).
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff"
_HIDDEN = re.compile(f"[\t\n{_CONTROLS}]")
_HIDDEN_KEEP_LINES = re.compile(f"[{_CONTROLS}]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte of a non-UTF-8 file name, as os.fsdecode escaped it
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str, lines: bool = False) -> str:
    """``text`` with control and invisible formatting characters written as escapes (``\\x1b``, ``\\u202e``);
    ``lines``: keep newlines and tabs (passages, answers), else they are escaped too (names, one-line fields)."""
    return (_HIDDEN_KEEP_LINES if lines else _HIDDEN).sub(_shown, text)


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (runs of whitespace made one space), cut at a word boundary within ``limit``
    characters, with "…" when cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat.rfind(" ", 0, limit)
    return flat[: cut if cut > limit // 2 else limit].rstrip(" ,;:.") + "…"


def rate(per_second: float, noun: str = "files") -> str:
    """A rate as a person reads it: "2.4 files/s", and below 0.1 a second per minute or per hour ("4.8 files/min"),
    where "0.1 files/s" or "0.0 files/s" would hide a slow model's pace."""
    if per_second >= 0.1:
        return f"{per_second:.1f} {noun}/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:.1f} {noun}/min"
    return f"{per_second * 3600:.1f} {noun}/h"


def duration(seconds: float) -> str:
    """A time left as a person reads it: "40 s", "6 min", "2 h 10 min"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"
