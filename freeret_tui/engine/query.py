"""The query language shared by the TUI's query box and CLI `search`/`ask`: words, an image path to search by,
and filters (``kind:image in:Notes after:2024-05-01 before:2024-06-01``), parsed into a Query and Filters.

Filters narrow stage 1 inside the index (kind on the vectors, folder and dates on the files' stored paths and
modification times), never by reading the files.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

from freeret_tui.engine.pictures import IMAGE_EXTENSIONS
from freeret_tui.engine.types import Content, Kind
from freeret_tui.errors import UsageError

_FILTER = re.compile(r"\b(kind|in|after|before):(\S+)")
_KINDS = {"image": Kind.IMAGE, "images": Kind.IMAGE, "photo": Kind.IMAGE, "text": Kind.TEXT, "doc": Kind.TEXT,
          "page": Kind.PAGE, "pages": Kind.PAGE, "scan": Kind.PAGE}


@dataclass(frozen=True)
class Query:
    text: str = ""
    image: Path | None = None

    def content(self) -> Content:
        return Content(text=self.text, image=self.image)


@dataclass(frozen=True)
class Filters:
    """Narrowing typed with the query: item kinds, a folder name (any part of the file's folder path, any case),
    and a modification-date range (``after`` inclusive, ``before`` exclusive, local days)."""

    kinds: tuple[Kind, ...] = ()
    folder: str = ""
    after: date | None = None
    before: date | None = None

    def describe(self) -> str:
        parts = [f"kind:{'/'.join(k.value for k in self.kinds)}"] if self.kinds else []
        parts += [f"in:{self.folder}"] if self.folder else []
        parts += [f"after:{self.after}"] if self.after else []
        parts += [f"before:{self.before}"] if self.before else []
        return " ".join(parts)

    @property
    def on_files(self) -> bool:
        """Whether any filter looks at the files (folder, dates): stage 1 then fetches a larger pool."""
        return bool(self.folder or self.after or self.before)

    def date_range(self) -> tuple[float | None, float | None]:
        """(from, until) as timestamps: local midnight of ``after`` and of ``before``."""
        def midnight(day: date | None) -> float | None:
            return datetime.combine(day, time()).timestamp() if day else None

        return midnight(self.after), midnight(self.before)


def parse_query(raw: str) -> tuple[Query, Filters]:
    """The query and its filters; a path to an existing image (typed or pasted) searches by that image."""
    kinds: list[Kind] = []
    folder, after, before = "", None, None
    for key, value in _FILTER.findall(raw):
        if key == "kind":
            if value.lower() not in _KINDS:
                raise UsageError(f"kind:{value}? use kind:image, kind:text or kind:page")
            kinds.append(_KINDS[value.lower()])
        elif key == "in":
            folder = value
        else:
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise UsageError(f"{key}:{value}? dates are YYYY-MM-DD") from None
            after, before = (day, before) if key == "after" else (after, day)
    text = _FILTER.sub("", raw).strip()
    image = None
    words = _split(text)
    for word in words:
        candidate = Path(word).expanduser()
        if candidate.suffix.lower() in IMAGE_EXTENSIONS and candidate.is_file():
            image = candidate.resolve()
            words.remove(word)
            text = " ".join(words)
            break
    return Query(text, image), Filters(tuple(dict.fromkeys(kinds)), folder, after, before)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)  # a pasted path may be quoted or contain escaped spaces
    except ValueError:
        return text.split()
