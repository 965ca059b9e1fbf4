"""Turns at the model: one call at a time, in the order they were asked for.

The TUI's searches share the loaded model with its daemon, which indexes in calls of a few seconds
(indexer.IndexOptions.call_seconds). With ``threading.Lock`` a search that asked during one of those calls did not
get the model when it ended: the daemon's thread, still running, took it again first, so the search waited for a
second call too (a throwaway check with calls of 0.1 s: 20 of 20 waits spanned the call in flight and one more).
Here the model goes to whoever asked first.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class Turns:
    """A lock that its waiters get in the order they asked (first in, first out); a context manager."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()
        self._held = False

    def __enter__(self) -> None:
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            try:
                while self._held or self._waiting[0] is not ticket:
                    self._changed.wait()
            except BaseException:  # interrupted while waiting (Ctrl-C): the turn is given up, not kept by nobody
                self._waiting.remove(ticket)
                self._changed.notify_all()
                raise
            self._waiting.popleft()
            self._held = True

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()
