"""Watching folders with watchdog: what the watchdog thread hears (file and folder paths, inotify overflows) is
collected in memory for the daemon's thread, which owns the database; the events that matter are chosen here.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Inbox:
    """Paths the watchdog thread saw, waiting for the daemon thread to queue them (deduplicated)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    files: dict[str, Path] = field(default_factory=dict)  # path -> root
    folders: dict[str, Path] = field(default_factory=dict)  # a folder appeared, vanished or moved: rescan it
    wake: threading.Event = field(default_factory=threading.Event)
    overflowed: threading.Event = field(default_factory=threading.Event)  # events were lost: scan again

    def add(self, root: Path, path: str, folder: bool) -> None:
        with self.lock:
            (self.folders if folder else self.files)[path] = root
        self.wake.set()

    def take(self) -> tuple[dict[str, Path], dict[str, Path]]:
        with self.lock:
            files, folders = self.files, self.folders
            self.files, self.folders = {}, {}
        return files, folders


# After an inotify overflow, the scan that finds what was lost waits this long, so that a burst that overflows
# the queue again and again is scanned once it calms down rather than once per overflow. Measured
# (benchmarks/daemon_load.py, 10k files dropped + 1000 ops/s): without it the 288 files whose events were lost
# waited for the periodic scan, and the index converged after 605 s instead of ~150 s.
OVERFLOW_RESCAN_SECONDS = 10.0


class OverflowAlarm(logging.Handler):
    """watchdog rebuilds its watches after the kernel's inotify queue overflows but tells only its logger (no
    event reaches a handler); this hears that warning and tells the daemon."""

    def __init__(self, inbox: Inbox):
        super().__init__(logging.WARNING)
        self.inbox = inbox

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.inbox.overflowed.set()
            self.inbox.wake.set()


# Event types that mean content may have changed; opened / closed-without-writing (the indexer's own reads)
# and attribute changes are ignored.
_RELEVANT = frozenset({"created", "modified", "moved", "deleted", "closed"})


def handler(root: Path, inbox: Inbox, data_dir: Path) -> Any:
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            if event.event_type not in _RELEVANT:
                return
            if event.is_directory and event.event_type == "modified":
                # A folder's own mtime changes with every file created in it; those files have their own events.
                # Treating it as "rescan the folder" walked all 10k files of a root per event under load
                # (benchmarks/daemon_load.py: nothing indexed for the first 18 s of a 1000 ops/s burst).
                return
            paths = [event.src_path]
            if event.event_type == "moved":
                paths.append(event.dest_path)  # the destination is where the file now is (editors' saves too)
            for raw in paths:
                path = os.fsdecode(raw)
                if Path(path).is_relative_to(data_dir):
                    continue  # our own database and logs
                inbox.add(root, path, event.is_directory)

    return Handler()
