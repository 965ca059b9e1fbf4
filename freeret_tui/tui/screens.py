"""The search screen (query, hits, preview, answer, status); its dialogs are in dialogs.py, the messages its
workers send back in messages.py.

All blocking work runs in thread workers; a newer query cancels the older one (exclusive worker group), and
results come back as messages tagged with the query's serial number so a late one is dropped.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from freeret_tui.display import visible
from freeret_tui.engine.daemon import DaemonStatus
from freeret_tui.engine.models.devices import speed_hint
from freeret_tui.engine.query import Filters, Query, parse_query
from freeret_tui.engine.types import Kind
from freeret_tui.errors import FreeretError, ModelUnavailableError
from freeret_tui.tui.backend import Backend, ShownHit
from freeret_tui.tui.dialogs import FailuresScreen, HelpScreen
from freeret_tui.tui.messages import AnswerPiece, Hits, ModelReady
from freeret_tui.tui.widgets import (
    AnswerPane,
    Preview,
    QueryBox,
    ResultList,
    StatusBar,
    plural,
    status_line,
    thumbnails,
)


class SearchScreen(Screen):
    """The one working screen."""

    BINDINGS = [
        # A priority binding acts as the app reads the key, before the keys after it are handed to the focused
        # widget: "/porto" typed in one burst from the hits lands whole in the box (not "o" = open on the hits).
        Binding("slash", "focus_query", "Query", id="query", priority=True),
        Binding("a", "ask", "Ask", id="ask"),
        Binding("o", "open", "Open", id="open"),
        Binding("y", "copy_path", "Copy", id="copy"),
        Binding("F", "failures", "Failures", id="failures"),
        Binding("escape", "cancel", "Stop", id="cancel"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("q", "app.quit", "Quit", id="quit"),
        *[Binding(str(n), f"jump({n})", show=False) for n in range(1, 10)],
    ]

    def __init__(self, backend: Backend, image_mode: str, keymap: dict[str, str] | None = None):
        super().__init__()
        if keymap:
            # Applied to this screen's own bindings now: Textual applies the app keymap only after dropping keys
            # the focused Input consumes, so "?" rebound to f1 would be lost while typing a query.
            self._bindings.apply_keymap(keymap)
        self.backend = backend
        self.image_mode = image_mode
        self.serial = 0
        self.shown_serial = 0  # the query whose hits are on screen
        self.query_: Query | None = None
        self.filters = Filters()
        self.terms: list[str] = []
        self.hits: list[ShownHit] = []
        self.stop = threading.Event()
        self.model_note = "model: not loaded"
        self._workers: dict[str, Worker] = {}  # the latest search and answer workers, whose failures are shown
        self._status: DaemonStatus | None = None  # the last one read (each second), shown again on focus changes

    def compose(self) -> ComposeResult:
        yield QueryBox(placeholder="search your files — kind:image in:Notes after:2024-01-01, or an image path",
                       id="query")
        yield Static(id="state")
        yield Static(id="notice")
        with Horizontal(id="main"):
            yield ResultList(id="results")
            with Vertical(id="side"):
                yield Preview(self.image_mode, id="preview")
                yield AnswerPane(id="answer")
        yield StatusBar(id="status")
        yield Footer(show_command_palette=False)  # ctrl+p still opens it; the footer's room goes to our keys

    def on_mount(self) -> None:
        self.query_one("#answer", AnswerPane).display = False
        self.query_one("#notice", Static).display = False
        self.query_one("#query", Input).focus()
        if not self.backend.needs_model():
            self.model_note = "model: not used (word search)"
        else:
            self.model_note = f"model: loading {self.backend.config.model}…"
            # After the first paint: importing torch in a worker holds the GIL for seconds and delayed the paint
            # from 0.8 s to 1.2 s (benchmarks/cold_start.py).
            self.call_after_refresh(self.load_model)
        self.refresh_status()
        self.set_interval(1.0, self.refresh_status)

    # -- model and status -----------------------------------------------------------------------------------

    @work(thread=True, group="model", exit_on_error=False)
    def load_model(self) -> None:
        model = self.backend.load_model()
        note = self.backend.ensure_daemon()
        self.post_message(ModelReady(f"{model.name.split('/')[-1]} · {model.device} · {note}", speed_hint(model)))

    def on_model_ready(self, message: ModelReady) -> None:
        self.model_note = message.note
        self.refresh_status()
        if message.hint:
            self.notify(message.hint, title="slow on this CPU", timeout=20, markup=False)
        if self.query_ is not None:  # a query typed while the model loaded: run it again, fully
            self.run_search(self.query_, self.filters)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every worker's failure lands here, whatever it raised: the person reads what failed and the state line
        never stays at "searching…" (a failure of a search or answer that a newer one replaced is dropped)."""
        worker = event.worker
        if event.state is not WorkerState.ERROR or worker.group in ("search", "answer") and worker is not (
            self._workers.get(worker.group)
        ):
            return
        err = worker.error
        reason = visible(str(err) if isinstance(err, FreeretError) else f"{type(err).__name__}: {err}")
        if worker.group == "model":
            # Kept on screen, not a toast: without the model only word search works, and the person needs the
            # way out in front of them until they act on it.
            self.model_note = "model: failed (lexical search only)"
            notice = Text("The model could not be loaded: searching by words only.\n", style="bold")
            notice.append(reason)
            for step in getattr(err, "steps", ()):
                notice.append(f"\n  • {visible(step)}")
            self.query_one("#notice", Static).update(notice)
            self.query_one("#notice", Static).display = True
            self.refresh_status()
            return
        if worker.group == "preview":
            self.query_one(Preview).clear(f"cannot show this hit: {reason}")
            return
        self.set_state(f"{worker.group} failed: {reason}")
        if worker.group == "answer":
            self.query_one(AnswerPane).finish((), stopped=True)
        self.notify(reason, title=f"{worker.group} failed", severity="error", timeout=10, markup=False)

    def on_descendant_focus(self) -> None:
        self._show_status()  # the failures hint depends on the focus: said at once, from the status last read

    def refresh_status(self) -> None:
        try:
            self._status = self.backend.status()
        except FreeretError as err:
            self._status = None
            self.query_one(StatusBar).show(f"index: {err}", self.model_note)
            return
        self._show_status()

    def _show_status(self) -> None:
        if self._status is not None:
            self.query_one(StatusBar).show(status_line(self._status, self.why_hint()), self.model_note)

    def why_hint(self) -> str:
        """The failures list's key as bound (config.toml may rebind it); from the query box, where a letter is typed
        into the query, "tab" first."""
        # The screen's own bindings, the keymap applied (mount): active_bindings is empty while a dialog is on top.
        key = next(self.app.get_key_display(binding) for bindings in self._bindings.key_to_bindings.values()
                   for binding in bindings if binding.action == "failures")
        typed = len(key) == 1 and isinstance(self.focused, Input)
        return f"{'tab, ' if typed else ''}{key}: why"

    # -- searching ------------------------------------------------------------------------------------------

    @on(Input.Submitted, "#query")
    def submit(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            return
        try:
            query, filters = parse_query(event.value)
        except FreeretError as err:
            self.notify(visible(str(err)), severity="warning", markup=False)
            return
        self.query_, self.filters = query, filters
        self.terms = query.text.split()
        self.query_one(AnswerPane).display = False  # an answer belongs to the hits it was asked over
        self.run_search(query, filters)
        # Now, not after the queued keys: keys typed straight after enter go to the hits (Widget.focus waits).
        self.set_focus(self.query_one(ResultList))

    def run_search(self, query: Query, filters: Filters) -> None:
        self.serial += 1
        self.stop.set()  # an answer or rerank still running for the old query stops
        self.stop = threading.Event()
        self.set_state("searching…")
        self._workers["search"] = self.search_worker(self.serial, query, filters, self.stop)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def search_worker(self, serial: int, query: Query, filters: Filters, stop: threading.Event) -> None:
        worker = get_current_worker()
        words = self.backend.word_candidates(query, filters)
        if words:  # painted before the query vector exists: the first hits never wait for the model
            self.post_message(Hits(serial, words, {}, "words"))
        try:
            hits = self.backend.candidates(query, filters)
        except ModelUnavailableError as err:
            if words is None:
                raise
            # A served model gone: the words' hits stand, and the person reads why meaning is missing.
            self.post_message(Hits(serial, words, {}, "offline"))
            self.app.call_from_thread(self.notify, visible(err.explain()), title="model server unreachable",
                                      severity="warning", timeout=10, markup=False)
            return
        reranking = bool(hits) and self.backend.reranking(filters)
        stage = "reranking" if reranking else "candidates"
        self.post_message(Hits(serial, hits, {}, stage))  # stage-1 hits at once; image decoding after
        thumbs = thumbnails(hits)
        if thumbs:
            self.post_message(Hits(serial, hits, thumbs, stage))
        if not reranking:
            return
        self.backend.pause_indexing(True)
        try:
            for step in self.backend.rerank_steps(query, hits, filters):
                if worker.is_cancelled or stop.is_set():
                    return
                self.post_message(Hits(serial, step, thumbs, "reranking"))
            self.post_message(Hits(serial, step, thumbs, "reranked"))
        finally:
            self.backend.pause_indexing(False)

    def on_hits(self, message: Hits) -> None:
        if message.serial != self.serial:
            return  # a newer query is on screen
        self.hits = message.hits[: self.backend.config.k]
        self.query_one(ResultList).show(self.hits, message.thumbs, new_query=message.serial != self.shown_serial)
        self.shown_serial = message.serial
        probs = [h.hit.rerank_prob for h in self.hits if h.hit.rerank_prob is not None]
        if not self.hits:
            state = "no match" + self._why_nothing()
        elif message.stage == "reranked" and self.backend.no_good_match(self.hits):
            state = f"reranked: no good match (best p={max(probs, default=0.0):.2f}); the closest candidates"
        else:
            found = plural(len(self.hits), "hit")
            state = {"words": f"{found} by words · searching by meaning…", "candidates": found,
                     "offline": f"{found} by words · the model server is unreachable",
                     "reranking": f"{found} · reranking {len(probs)}/"
                                  f"{min(len(message.hits), self.backend.config.rerank_k)}…",
                     "reranked": f"{found} · reranked"}[message.stage]
        filters = self.filters.describe()
        self.set_state(state + (f" · filters {filters}" if filters else ""))
        self.show_preview()

    def _why_nothing(self) -> str:
        """Why a search found nothing when files were left out: the person sees it is not the index's fault."""
        counts = self.backend.status().counts
        left_out = counts["skipped"] + counts["failed"]
        model = self.backend.model
        if model is not None and not model.supports_images and set(self.filters.kinds) & {Kind.IMAGE, Kind.PAGE}:
            return f" · {model.name.split('/')[-1]} is text-only: photos and scans are not indexed (F lists them)"
        return f" · {plural(left_out, 'file')} not indexed (F lists why)" if left_out else ""

    def set_state(self, text: str) -> None:
        self.query_one("#state", Static).update(Text(text, style="italic"))

    @on(ResultList.OptionHighlighted)
    def highlighted(self) -> None:
        self.show_preview()

    def selected(self) -> ShownHit | None:
        index = self.query_one(ResultList).highlighted
        return self.hits[index] if index is not None and 0 <= index < len(self.hits) else None

    def show_preview(self) -> None:
        preview = self.query_one(Preview)
        hit = self.selected()
        if hit is None:
            preview.clear()
        elif hit.hit.image is not None:
            self.preview_worker(hit)
        else:
            preview.show_text(hit, self.terms)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def preview_worker(self, hit: ShownHit) -> None:
        from freeret_tui.engine.pictures import load_image_or_reason

        assert hit.hit.image is not None
        picture = load_image_or_reason(hit.hit.image)
        preview = self.query_one(Preview)
        if isinstance(picture, str):
            self.app.call_from_thread(preview.clear, f"cannot show {hit.hit.path.name}: {picture}")
        elif self.selected() == hit:  # still the one highlighted
            self.app.call_from_thread(preview.show_image, hit, picture, self.terms)

    @on(ResultList.OptionSelected)
    def chosen(self) -> None:
        self.action_open()

    # -- actions --------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In the query box "/" is a character (an image path): the priority binding stands aside there."""
        return not (action == "focus_query" and isinstance(self.focused, Input))

    def action_focus_query(self) -> None:
        # Now, not after the queued keys: "/porto" typed in one burst must land whole in the box.
        self.set_focus(self.query_one("#query", Input))

    def action_open(self) -> None:
        hit = self.selected()
        if hit is None:
            return
        try:
            self.backend.open(hit.hit.path)
        except FreeretError as err:
            self.notify(visible(str(err)), severity="error", markup=False)
            return
        self.notify(f"opened {visible(hit.hit.path.name)}", markup=False)

    def action_copy_path(self) -> None:
        hit = self.selected()
        if hit is not None:
            self.app.copy_to_clipboard(str(hit.hit.path))
            self.notify(f"copied {visible(str(hit.hit.path))}", markup=False)

    def action_jump(self, n: int) -> None:
        if 1 <= n <= len(self.hits):
            results = self.query_one(ResultList)
            results.moved = True
            results.highlighted = n - 1
            self.set_focus(results)

    def action_ask(self) -> None:
        if self.query_ is None or not self.hits:
            self.notify("search first, then press a to ask about the hits", severity="warning")
            return
        if self.backend.model is None:
            if self.backend.needs_model():
                self.notify("the model is still loading", severity="warning")
            else:
                self.notify("answers need the model, which this run does not load (word search, not watching); "
                            "start without --mode lexical to ask", severity="warning")
            return
        question = self.query_one("#query", Input).value.strip()
        self.query_one(AnswerPane).start(question)
        self.stop.set()
        self.stop = threading.Event()
        self._workers["answer"] = self.answer_worker(self.serial, question, [h.hit for h in self.hits], self.stop)

    @work(thread=True, exclusive=True, group="answer", exit_on_error=False)
    def answer_worker(self, serial: int, question: str, hits: list[Any], stop: threading.Event) -> None:
        self.backend.pause_indexing(True)
        try:
            for chunk in self.backend.answer(question, hits, stop):
                self.post_message(AnswerPiece(serial, chunk.text, chunk.done, chunk.citations, stop.is_set()))
        finally:
            self.backend.pause_indexing(False)

    def on_answer_piece(self, message: AnswerPiece) -> None:
        if message.serial != self.serial:
            return
        pane = self.query_one(AnswerPane)
        if message.done:
            pane.finish(message.citations, message.stopped)
        else:
            pane.add(message.text)

    def action_cancel(self) -> None:
        """Stop a rerank or an answer in flight; with nothing running the screen stays as it is."""
        if not any(worker.is_running for worker in self._workers.values()):
            return
        self.stop.set()
        self.set_state("stopped")

    def action_failures(self) -> None:
        self.app.push_screen(FailuresScreen(self.backend.failures()))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.app.active_bindings_help()))

