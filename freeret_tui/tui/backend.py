"""What the TUI asks of the engine's session, in plain Python (no textual here): hits with the dates the list
shows, opening files, and the indexing daemon (started in-process, or an already running one followed).

Every method that can block (model load, embedding, rerank, generation) is called from a Textual thread worker;
nothing here imports torch until the session loads the model.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from freeret_tui.engine.daemon import Daemon, DaemonLock, DaemonRunning, DaemonStatus, holder_pid
from freeret_tui.engine.models.base import Model
from freeret_tui.engine.query import Filters, Query
from freeret_tui.engine.session import Session, SessionConfig
from freeret_tui.engine.types import AnswerChunk, Hit
from freeret_tui.errors import NotReadyError

Opener = Callable[[Path], None]
# Items the daemon embeds per model call at most while the TUI shares the CPU (the daemon alone: 64), beside the
# call_seconds bound of every call (indexer.py): a search waits for at most one such call.
TUI_FLUSH_ITEMS = 8


@dataclass(frozen=True)
class ShownHit:
    """A hit with what the list shows beside it: its file's date (a photo's taken time, else its modification time)."""

    hit: Hit

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.hit.dated).strftime("%Y-%m-%d") if self.hit.dated else ""


def system_opener(path: Path) -> None:
    """Open ``path`` with the desktop's default application, detached from the terminal."""
    command = ["open", str(path)] if sys.platform == "darwin" else ["xdg-open", str(path)]
    try:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except FileNotFoundError:
        raise NotReadyError(f"no {command[0]} on this system to open files with") from None


class Backend:
    """The session, the watched folders and the daemon for one TUI run."""

    def __init__(self, session: Session, folders: list[Path], opener: Opener = system_opener,
                 start_daemon: bool = True):
        self.session = session
        self.folders = folders
        self.opener = opener
        self.start_daemon = start_daemon
        self.daemon_note = ""  # what the status bar says about the daemon
        self._daemon: Daemon | None = None
        self._daemon_thread: threading.Thread | None = None
        self._lock: DaemonLock | None = None

    @property
    def config(self) -> SessionConfig:
        return self.session.config

    @property
    def model(self) -> Model | None:
        return self.session.model

    def needs_model(self) -> bool:
        """Whether this run loads the model: dense/hybrid search, rerank, or indexing the folders."""
        return self.session.needs_model() or (self.start_daemon and bool(self.folders))

    def status(self) -> DaemonStatus:
        return self.session.status()

    def failures(self) -> list[tuple[str, str]]:
        return self.session.failures()

    # -- model and daemon (worker threads) ------------------------------------------------------------------

    def load_model(self) -> Model:
        return self.session.load_model()

    def ensure_daemon(self) -> str:
        """Index the folders in this process, unless a daemon already runs for this data dir (then follow it)."""
        if not self.start_daemon or not self.folders:
            self.daemon_note = "not watching"
            return self.daemon_note
        directory = self.session.data_dir
        pid = holder_pid(directory)
        if pid is not None:
            watched = {str(p) for p, _, _ in self.session.store.roots()}
            missing = [str(f) for f in self.folders if str(f) not in watched]
            self.daemon_note = f"daemon pid {pid}" + (f" (not watching {', '.join(missing)})" if missing else "")
            return self.daemon_note
        lock = DaemonLock(directory)
        try:
            lock.acquire()
        except DaemonRunning as err:  # another one started in between
            self.daemon_note = str(err)
            return self.daemon_note
        self._lock = lock
        self._daemon = self.session.daemon(self.folders, flush_items=TUI_FLUSH_ITEMS)
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

    def reranking(self, filters: Filters) -> bool:
        return self.session.options(filters).rerank

    def candidates(self, query: Query, filters: Filters) -> list[ShownHit]:
        """Stage 1, filtered inside the index."""
        return [ShownHit(h) for h in self.session.candidates(query, filters)]

    def word_candidates(self, query: Query, filters: Filters) -> list[ShownHit] | None:
        """Stage 1 by words alone (no model call), or None when stage 1 needs no model anyway."""
        hits = self.session.word_candidates(query, filters)
        return None if hits is None else [ShownHit(h) for h in hits]

    def rerank_steps(self, query: Query, shown: Sequence[ShownHit], filters: Filters) -> Iterator[list[ShownHit]]:
        for step in self.session.rerank_steps(query, [s.hit for s in shown], filters):
            yield [ShownHit(h) for h in step]

    def no_good_match(self, shown: Sequence[ShownHit]) -> bool:
        return self.session.no_good_match([s.hit for s in shown])

    def answer(self, question: str, hits: Sequence[Hit], stop: threading.Event) -> Iterator[AnswerChunk]:
        yield from self.session.answer(question, hits, stop)

    def open(self, path: Path) -> None:
        if not path.exists():
            raise NotReadyError(f"{path} is no longer there")
        self.opener(path)
