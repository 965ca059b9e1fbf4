"""The main screen's widgets: the result list (with thumbnails), the preview pane, the answer pane and the
status bar. They only display what they are given; the screen runs the work."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from freeret_tui.display import duration, one_line, rate, visible
from freeret_tui.engine.answer import CITATION
from freeret_tui.engine.daemon import DaemonStatus
from freeret_tui.engine.types import Kind
from freeret_tui.tui.backend import ShownHit

_ICONS = {Kind.IMAGE: "img", Kind.TEXT: "txt", Kind.PAGE: "pdf"}
THUMB_CELLS = (6, 3)  # width, height in terminal cells (half-block: 6x6 pixels)


def thumbnail(picture: Any) -> RenderableType:
    """A half-block rendering of an image (PIL) small enough for a list row (any terminal shows half-blocks)."""
    from textual_image.renderable import HalfcellImage

    width, height = THUMB_CELLS
    return HalfcellImage(picture, width=width, height=height)


def thumbnails(hits: list[ShownHit]) -> dict[int, Any]:
    """Half-block thumbnails for the image hits (decoded small, in the worker thread)."""
    from freeret_tui.engine.pictures import load_image_or_reason

    out: dict[int, Any] = {}
    for shown in hits:
        picture = load_image_or_reason(shown.hit.image, max_side=64) if shown.hit.image is not None else None
        if picture is not None and not isinstance(picture, str):  # a broken file's row shows its kind instead
            out[shown.hit.item_id] = thumbnail(picture)
    return out


def score_text(hit: ShownHit) -> Text:
    """The rerank probability, the one score that means the same in every query. Stage-1 scores are relative
    to the other candidates (a lone hit would read 1.000 whatever it is); the preview shows them, raw."""
    prob = hit.hit.rerank_prob
    if prob is None:
        return Text("")
    return Text(f"p={prob:.2f}", style="bold green" if prob >= 0.5 else "yellow")


def kind_label(hit: ShownHit) -> str:
    """What the file is, from its type: "pdf" for a PDF's passage as for its scanned page, "jpg" for a photo."""
    h = hit.hit
    label = h.path.suffix.lower().lstrip(".") or _ICONS.get(h.kind, "?")
    return f"{label} scan" if h.kind is Kind.PAGE else label


def hit_row(n: int, hit: ShownHit, thumb: RenderableType | None, thumb_column: bool) -> RenderableType:
    """One hit: number, thumbnail (only when some hit in the list has one: no empty gap before text hits), name,
    where and what it is, a snippet, and the rerank probability."""
    h = hit.hit
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(width=3, justify="right")
    if thumb_column:
        grid.add_column(width=THUMB_CELLS[0])
    grid.add_column(ratio=1)
    grid.add_column(width=6, justify="right")
    where = f"{visible(h.path.parent.name)}/ · {kind_label(hit)}" + (f" · {h.location}" if h.location else "")
    where += f" · {hit.when}" if hit.when else " · (gone)"
    if h.copies:
        where += f" · +{len(h.copies)} {'copy' if len(h.copies) == 1 else 'copies'}"
    title = Text(visible(h.path.name), style="bold")
    passage = Text(visible(one_line(h.text, 160)), style="italic dim") if h.text else Text("")
    cells: list[RenderableType] = [Text(f"{n}.")] + ([thumb or Text("")] if thumb_column else [])
    grid.add_row(*cells, Group(title, Text(where, style="cyan"), passage), score_text(hit))
    return grid


class ResultList(OptionList):
    """Hits, best first; j/k or the arrows move, the screen listens for the highlighted one."""

    # Not in the footer: at 80 columns it had no room left for "? Help  q Quit" (the help lists j and k).
    BINDINGS = [Binding("j", "cursor_down", "Down", show=False), Binding("k", "cursor_up", "Up", show=False)]

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.moved = False  # the person picked a hit: keep it highlighted while rerank reorders the list

    def action_cursor_down(self) -> None:
        self.moved = True
        super().action_cursor_down()

    def action_cursor_up(self) -> None:
        self.moved = True
        super().action_cursor_up()

    def show(self, hits: Sequence[ShownHit], thumbs: dict[int, RenderableType], new_query: bool) -> None:
        keep = self.highlighted_option.id if self.highlighted_option is not None else None
        if new_query:
            self.moved = False
        self.clear_options()
        column = any(h.hit.item_id in thumbs for h in hits)
        self.add_options(Option(hit_row(n, h, thumbs.get(h.hit.item_id), column), id=str(h.hit.item_id))
                         for n, h in enumerate(hits, start=1))
        if hits:
            ids = [str(h.hit.item_id) for h in hits]
            self.highlighted = ids.index(keep) if self.moved and keep in ids else 0


# Question words that would light up every passage ("how much was the …").
_UNMARKED = frozenset(["the", "and", "for", "was", "were", "are", "is", "how", "what", "when", "where", "which", "who", "why", "did", "does", "with", "from", "that", "this", "have", "has", "had", "about", "into", "our", "your", "their", "its"])


def highlight(text: str, terms: Sequence[str]) -> Text:
    """The passage with every query term marked (case-insensitive, whole words and prefixes)."""
    out = Text(text)
    words = [re.escape(t) for t in terms if len(t) > 2 and t.lower() not in _UNMARKED]
    if words:
        out.highlight_regex(re.compile(r"(?i)\b(" + "|".join(words) + r")\w*"), style="bold black on yellow")
    return out


class Preview(VerticalScroll):
    """The selected hit: its image (Kitty/Sixel where the terminal has them, half-blocks otherwise) or passage."""

    def __init__(self, image_mode: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_mode = image_mode  # "auto" or "halfcell" (deterministic, for snapshots)

    def compose(self) -> ComposeResult:
        yield Static(id="preview-head")
        yield Static(id="preview-body")

    def clear(self, message: str = "") -> None:
        self._drop_image()
        self.query_one("#preview-head", Static).update(Text(visible(message)))  # a file name is text, never markup
        self.query_one("#preview-body", Static).update("")

    def _drop_image(self) -> None:
        for old in self.query(".preview-image"):
            old.remove()

    def show_text(self, hit: ShownHit, terms: Sequence[str]) -> None:
        self._drop_image()
        self.query_one("#preview-head", Static).update(_head(hit))
        self.query_one("#preview-body", Static).update(highlight(visible(hit.hit.text, lines=True), terms))

    def show_image(self, hit: ShownHit, picture: Any, terms: Sequence[str]) -> None:
        """The picture under its head and its own words (a photo's caption and keywords), if it has any."""
        from textual_image.widget import HalfcellImage
        from textual_image.widget import Image as AutoImage

        self._drop_image()
        self.query_one("#preview-head", Static).update(_head(hit))
        self.query_one("#preview-body", Static).update(highlight(visible(hit.hit.text, lines=True), terms))
        widget_type = HalfcellImage if self.image_mode == "halfcell" else AutoImage
        self.mount(widget_type(picture, classes="preview-image"))


def _head(hit: ShownHit) -> Text:
    h = hit.hit
    head = Text(visible(str(h.path)), style="bold")
    details = [d for d in (h.location, hit.when, _score_line(hit)) if d]
    head.append("\n" + "  ·  ".join(details), style="cyan")
    for path in h.copies:  # identical files, merged into this hit (search.py)
        head.append(f"\nalso at {visible(str(path))}", style="dim")
    return head


def _score_line(hit: ShownHit) -> str:
    h = hit.hit
    parts = [f"rerank p={h.rerank_prob:.2f}"] if h.rerank_prob is not None else []
    parts += [f"dense {h.dense_score:.3f}"] if h.dense_score is not None else []
    parts += [f"bm25 {h.lexical_score:.2f}"] if h.lexical_score is not None else []
    return ", ".join(parts)


class AnswerPane(Static):
    """The streamed answer; each citation [n] is a link to hit n (click, or press n)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.text = ""
        self._question = ""

    def start(self, question: str) -> None:
        self.text = ""
        self._question = question
        self.display = True
        self._render_text("…")

    def add(self, piece: str) -> None:
        # Model output may hold control characters; printed raw they would drive the terminal.
        self.text += "".join(ch for ch in piece if ch.isprintable() or ch in "\n\t")
        self._render_text()

    def finish(self, citations: Sequence[int], stopped: bool = False) -> None:
        note = " [stopped]" if stopped else ""
        cited = ", ".join(f"[{n}]" for n in citations) or "none"
        self._render_text(f"\n— cites {cited}{note}")

    def _render_text(self, tail: str = "") -> None:
        markup = f"[b]Q: {escape(self._question)}[/]\n"
        text, done = self.text + tail, 0
        for match in CITATION.finditer(text):
            n = match.group(1)
            markup += escape(text[done:match.start()]) + f"[b $accent @click=screen.jump({n})]\\[{n}][/]"
            done = match.end()
        self.update(Content.from_markup(markup + escape(text[done:])))


class StatusBar(Static):
    """Indexing progress and model state, refreshed by the screen every second."""

    plain = ""  # what it says, as text (tests and the screenshot script read it)

    def show(self, indexing: str, model: str) -> None:
        self.plain = f"{indexing} | {model}"
        line = Table.grid(expand=True)
        line.add_column(ratio=1)
        line.add_column(justify="right")
        line.add_row(Text(indexing), Text(model, style="bold"))
        self.update(line)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def status_line(status: DaemonStatus, why: str = "F: why") -> str:
    """Indexed, skipped, failed and queued files apart: a text-only model skipping photos is not a stuck index;
    ``why``: how to list the files left out, from where the focus is."""
    c = status.counts
    parts = [f"indexed {c['indexed']}"]
    parts += [f"{c['skipped']} skipped"] if c["skipped"] else []
    parts += [f"{c['failed']} failed"] if c["failed"] else []
    if c["queued"]:
        parts.append(f"{c['queued']} queued")
        if status.rate_files_per_s:
            parts.append(f"{rate(status.rate_files_per_s)} · {duration(status.eta_s or 0)} left")
    if c["skipped"] or c["failed"]:
        parts.append(why)
    return " · ".join(parts)


class QueryBox(Input):
    """The query input; its footer says how to search, reach the hits and quit while letters type text."""

    BINDINGS = [
        Binding("enter", "submit", "Search", show=True),
        Binding("tab", "app.focus_next", "Hits", show=True),
        # Its own priority binding: the app's ctrl+q is hidden from the footer (Textual marks it a system key).
        Binding("ctrl+q", "app.quit", "Quit", show=True, priority=True),
    ]
