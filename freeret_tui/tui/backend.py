"""What the TUI asks of the engine, in plain Python (no textual here): the query language, searching in stages,
answering, opening files, and the indexing daemon (started in-process, or an already running one followed).

Every method that can block (model load, embedding, rerank, generation) is called from a Textual thread worker;
nothing here imports torch until ``load_model`` runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from freeret_tui.engine.daemon import Daemon, DaemonLock, DaemonRunning, DaemonStatus, holder_pid, read_status
from freeret_tui.engine.extract import IMAGE_EXTENSIONS
from freeret_tui.engine.models.base import Model, Pooling
from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.search import Query, Searcher, SearchOptions
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import AnswerChunk, Content, Hit, Kind
from freeret_tui.errors import NotReadyError, UsageError
from freeret_tui.settings import Settings

Opener = Callable[[Path], None]
# Files the daemon indexes per model call while the TUI shares the CPU: a search waits for at most one such
# call (the daemon alone commits 64 per batch).
TUI_FLUSH_ITEMS = 8

_FILTER = re.compile(r"\b(kind|in|after|before):(\S+)")
_KINDS = {"image": Kind.IMAGE, "images": Kind.IMAGE, "photo": Kind.IMAGE, "text": Kind.TEXT, "doc": Kind.TEXT,
          "page": Kind.PAGE, "pages": Kind.PAGE, "scan": Kind.PAGE}


@dataclass(frozen=True)
class Filters:
    """Narrowing typed into the query box: ``kind:image in:Notes after:2024-05-01 before:2024-06-01``."""

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

    def keep(self, hit: Hit, modified: float | None) -> bool:
        if self.folder and self.folder.lower() not in str(hit.path.parent).lower():
            return False
        when = date.fromtimestamp(modified) if modified is not None else None
        if self.after and (when is None or when < self.after):
            return False
        return not (self.before and (when is None or when >= self.before))


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


@dataclass(frozen=True)
class ShownHit:
    """A hit with what the list shows beside it: its file's date (None when the file is gone)."""

    hit: Hit
    modified: float | None

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.modified).strftime("%Y-%m-%d") if self.modified else ""


class _SharedModel:
    """The one model, used by the search workers and the daemon thread one call at a time (hooks are per call)."""

    def __init__(self, model: Model):
        self._model = model
        self._lock = threading.Lock()
        self.name, self.dim, self.device = model.name, model.dim, model.device
        self.supports_images, self.image_max_pixels = model.supports_images, model.image_max_pixels
        self.batch_size = getattr(model, "batch_size", 8)

    def embed(self, items: Sequence[Content], side: Side, kinds: Sequence[Kind] | None = None,
              pooling: Pooling = Pooling.PREMLP) -> Any:
        with self._lock:
            return self._model.embed(items, side, kinds, pooling)

    def rerank(self, query: Content, candidates: Sequence[Content], framing: Framing = Framing.MC) -> list[float]:
        with self._lock:
            return self._model.rerank(query, candidates, framing)

    def generate(self, system: str, text: str, images: Sequence[object], stop: threading.Event | None) -> Iterator[str]:
        with self._lock:
            yield from self._model.generate(system, text, images, stop)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            return self._model.token_spans(text)


def system_opener(path: Path) -> None:
    """Open ``path`` with the desktop's default application, detached from the terminal."""
    command = ["open", str(path)] if sys.platform == "darwin" else ["xdg-open", str(path)]
    try:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except FileNotFoundError:
        raise NotReadyError(f"no {command[0]} on this system to open files with") from None


@dataclass
class Backend:
    """Index, model and daemon for one TUI session."""

    settings: Settings
    folders: list[Path]
    data_dir: Path
    opener: Opener = system_opener
    start_daemon: bool = True
    model: _SharedModel | None = None
    daemon_note: str = ""  # what the status bar says about the daemon
    _local: threading.local = field(default_factory=threading.local)
    _daemon: Daemon | None = None
    _daemon_thread: threading.Thread | None = None
    _lock: DaemonLock | None = None

    @property
    def store(self) -> Store:
        """This thread's connection (apsw refuses one connection used by two threads at once)."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store.in_dir(self.data_dir)
        return store

    def needs_model(self) -> bool:
        """Whether this session loads the model: dense/hybrid search, rerank, or indexing the folders."""
        s = self.settings
        return s.mode != "lexical" or bool(s.rerank) or (self.start_daemon and bool(self.folders))

    def status(self) -> DaemonStatus:
        return read_status(self.store, self.data_dir)

    def failures(self) -> list[tuple[str, str]]:
        return self.store.skips(200)

    # -- model and daemon (worker threads) ------------------------------------------------------------------

    def load_model(self) -> _SharedModel:
        from freeret_tui.engine.models import load_model

        s = self.settings
        model = load_model(s.model, **s.model_options())
        # Refuses an index built by another model or image budget, with the reason.
        self.store.bind_model(model.name, model.dim, model.image_max_pixels)
        self.model = _SharedModel(model)
        return self.model

    def ensure_daemon(self) -> str:
        """Index the folders in this process, unless a daemon already runs for this data dir (then follow it)."""
        if not self.start_daemon or not self.folders:
            self.daemon_note = "not watching"
            return self.daemon_note
        pid = holder_pid(self.data_dir)
        if pid is not None:
            watched = {str(p) for p, _, _ in self.store.roots()}
            missing = [str(f) for f in self.folders if str(f) not in watched]
            self.daemon_note = f"daemon pid {pid}" + (f" (not watching {', '.join(missing)})" if missing else "")
            return self.daemon_note
        assert self.model is not None, "load the model first"
        lock = DaemonLock(self.data_dir)
        try:
            lock.acquire()
        except DaemonRunning as err:  # another one started in between
            self.daemon_note = str(err)
            return self.daemon_note
        self._lock = lock
        s = self.settings
        self._daemon = Daemon(Store.in_dir(self.data_dir), self.model, self.folders, self.data_dir,
                              s.chunk_tokens, s.chunk_overlap, exclude=frozenset(s.exclude),
                              flush_items=TUI_FLUSH_ITEMS)
        self._daemon_thread = threading.Thread(target=self._daemon.run, name="freeret-daemon", daemon=True)
        self._daemon_thread.start()
        self.daemon_note = "watching"
        return self.daemon_note

    def pause_indexing(self, paused: bool) -> None:
        """Hold the in-process daemon between model calls while a rerank or answer needs the CPU."""
        if self._daemon is not None:
            (self._daemon.paused.set if paused else self._daemon.paused.clear)()

    def close(self) -> None:
        if self._daemon is not None and self._daemon_thread is not None:
            self._daemon.stop.set()
            self._daemon.paused.clear()
            self._daemon_thread.join(timeout=30)
        if self._lock is not None:
            self._lock.release()

    # -- searching (worker threads) -------------------------------------------------------------------------

    def options(self, filters: Filters) -> SearchOptions:
        s = self.settings
        mode = s.mode if self.model is not None else "lexical"  # until the model is ready
        return SearchOptions(k=s.k, mode=mode, rerank=bool(s.rerank) and self.model is not None,
                             rerank_k=s.rerank_k, kinds=filters.kinds, pool=max(50, 5 * s.k))

    def candidates(self, query: Query, filters: Filters) -> list[ShownHit]:
        """Stage 1, filtered (folder and date filters need more candidates: the pool is 5x k)."""
        if query.image is not None and self.model is None:
            raise NotReadyError("searching by image needs the model: it is still loading")
        opts = self.options(filters)
        searcher = Searcher(self.store, self.model)
        hits = searcher.candidates(query, replace(opts, k=opts.pool, rerank=False))
        shown = [ShownHit(h, _mtime(h.path)) for h in hits]
        return [s for s in shown if filters.keep(s.hit, s.modified)][: max(opts.k, opts.rerank_k)]

    def rerank_steps(self, query: Query, shown: Sequence[ShownHit], filters: Filters) -> Iterator[list[ShownHit]]:
        dates = {s.hit.item_id: s.modified for s in shown}
        opts = self.options(filters)
        for step in Searcher(self.store, self.model).rerank_steps(query, [s.hit for s in shown], opts):
            yield [ShownHit(h, dates.get(h.item_id)) for h in step]

    def answer(self, question: str, hits: Sequence[Hit], stop: threading.Event) -> Iterator[AnswerChunk]:
        from freeret_tui.engine.answer import answer

        if self.model is None:
            raise NotReadyError("the model is still loading")
        yield from answer(self.model, question, hits, stop)

    def open(self, path: Path) -> None:
        if not path.exists():
            raise NotReadyError(f"{path} is no longer there")
        self.opener(path)


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
