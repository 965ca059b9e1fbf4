"""The folder-watching daemon: one per data dir, keeps the index equal to the watched folders.

Order of work, and why:
1. Take the data dir's lock (``flock`` on ``daemon.lock``, mode 0600; the kernel releases it even after kill -9).
2. Start watching (watchdog) *before* scanning, so nothing that changes during the scan is missed.
3. Reconcile every root with a mark-and-sweep scan (inotify has no history and drops events on overflow).
4. Loop: watcher events go into the persistent queue with a debounce delay; due paths are indexed in batches,
   each committed in one transaction together with their removal from the queue; every ``rescan_seconds`` the
   roots are reconciled again, and ``OVERFLOW_RESCAN_SECONDS`` after the kernel's inotify queue overflowed (the
   events lost then are found by that scan). A root that disappears (an unmounted drive) is marked offline, never
   emptied.

Only the daemon's own thread touches the database; the watchdog thread just collects paths in memory (a few
hundred milliseconds' worth, which the next scan recovers if the process dies before they are queued).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freeret_tui.engine.indexer import IndexOptions, Interrupted, index_files
from freeret_tui.engine.models.base import Model
from freeret_tui.engine.private import open_private
from freeret_tui.engine.rereads import reread_photos
from freeret_tui.engine.scan import TRASH_SECONDS, indexable, reconcile, under
from freeret_tui.engine.sidecars import is_sidecar, photos_beside
from freeret_tui.engine.store import Store
from freeret_tui.engine.store.tx import DiskFullError
from freeret_tui.engine.types import Skip
from freeret_tui.engine.watch import OVERFLOW_RESCAN_SECONDS, Inbox, OverflowAlarm, handler
from freeret_tui.errors import FreeretError, ModelUnavailableError

LOCK_NAME = "daemon.lock"
STATUS_KEY = "daemon_status"
# Events on one file closer together than this are handled once (editors write a file in several steps).
DEBOUNCE_SECONDS = 1.0
# Sidecars' events wait until their folder has had none for this long, then one listing of it finds their photos
# (sidecars.photos_beside): a Takeout archive unpacked into a watched folder sends one a photo, and a listing of a
# 10k-photo folder took 35 ms (a throwaway timing), which was paid at every drain of the inbox while it unpacked.
SIDECAR_QUIET_SECONDS = 1.0
# How often a daemon stopped by a full disk tries its queue again.
DISK_FULL_RETRY_SECONDS = 30.0
# Files per queue batch; each batch is one transaction (bounded memory however many files arrive).
BATCH_FILES = 64


class DaemonRunning(FreeretError):
    """Another daemon holds this data dir's lock."""


class DaemonLock:
    """An exclusive ``flock`` on ``<data dir>/daemon.lock`` holding the owner's pid."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_private(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonRunning(f"a daemon is already running for this data dir (pid {holder_pid(self.path.parent)})")
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as err:  # a full disk: the pid cannot be written, so others could not find this daemon
            os.close(fd)
            raise FreeretError(f"cannot write the daemon's lock file {self.path}: {err.strerror or err}",
                               ["free some space on that disk, then start the daemon again"]) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder_pid(data_dir: Path) -> int | None:
    """The pid of the running daemon for ``data_dir``, or None when none holds the lock."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@dataclass
class DaemonStatus:
    """What ``daemon status`` reports, read from the database by any process."""

    running_pid: int | None
    roots: list[dict[str, Any]]
    counts: dict[str, int]
    queued: int
    rate_files_per_s: float | None
    eta_s: float | None
    embedded_items: int
    last_errors: list[dict[str, str]]
    heartbeat: float | None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def read_status(store: Store, data_dir: Path) -> DaemonStatus:
    state = json.loads(store.get_meta(STATUS_KEY) or "{}")
    queued = store.queue_length()
    rate = state.get("rate")
    counts = store.counts()
    return DaemonStatus(
        running_pid=holder_pid(data_dir),
        roots=[{"path": str(p), "online": online, "scanned_at": scanned} for p, online, scanned in store.roots()],
        counts={
            "indexed": counts.get("indexed", 0),
            "queued": queued,
            "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0),
            "items": counts.get("items", 0),
        },
        queued=queued,
        rate_files_per_s=rate,
        eta_s=(queued / rate) if rate else None,
        embedded_items=store.embedded_items,
        last_errors=[{"path": p, "reason": r} for p, r in store.skips(10)],
        heartbeat=state.get("heartbeat"),
    )


class Daemon:
    """Watches ``roots`` and indexes into ``store`` with ``model`` until ``stop`` is set.

    ``paused`` (set by the TUI while it reranks or answers on the same CPU) holds indexing back from its next
    model call on; ``stop`` ends it there too (the batch in flight is dropped, its paths stay queued).
    """

    def __init__(
        self,
        store: Store,
        model: Model,
        roots: Iterable[Path],
        data_dir: Path,
        options: IndexOptions = IndexOptions(),
        debounce: float = DEBOUNCE_SECONDS,
        rescan_seconds: float = 600.0,
        log: Callable[[str], None] = lambda message: None,
    ):
        self.store = store
        self.model = model
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.data_dir = data_dir.resolve()
        self.options = options
        self.exclude = options.exclude
        self.debounce = debounce
        self.retry_seconds = DISK_FULL_RETRY_SECONDS
        self._next_scan = 0.0
        self.rescan_seconds = rescan_seconds
        self.log = log
        self.stop = threading.Event()
        self.paused = threading.Event()
        self._inbox = Inbox()
        self._sidecars: dict[Path, tuple[Path, set[str], float]] = {}  # folder -> root, names, last event
        self._observer: Any = None
        self._alarm = OverflowAlarm(self._inbox)
        self._watched: dict[Path, Any] = {}
        self._offline: set[Path] = set()
        self._done_times: list[tuple[float, int]] = []  # (time, files) of recent commits, for the rate
        self._busy_since: float | None = None  # when the current stretch of work began
        self._started = time.time()

    # -- watching -------------------------------------------------------------------------------------------

    def _watch(self, root: Path) -> None:
        from watchdog.observers import Observer

        if self._observer is None:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        if root not in self._watched:
            self._watched[root] = self._observer.schedule(handler(root, self._inbox, self.data_dir), str(root),
                                                          recursive=True)

    def _unwatch(self, root: Path) -> None:
        watch = self._watched.pop(root, None)
        if watch is not None and self._observer is not None:
            self._observer.unschedule(watch)

    def _drain_inbox(self) -> None:
        """Queue what the watcher saw; folders are expanded (new contents walked, vanished contents listed)."""
        files, folders = self._inbox.take()
        # Stored paths are queued even when no longer indexable: the indexer removes those.
        entries = [(root, Path(p)) for p, root in files.items()
                   if indexable(root, Path(p), self.exclude) or self.store.file_row(Path(p)) is not None]
        # A sidecar written, added or removed: its photos, whose words and date the indexer reads again, once its
        # folder is quiet. (A daemon stopped before then loses nothing: the next scan compares the fingerprints.)
        now = time.time()
        for p, root in files.items():
            if is_sidecar(Path(p)):
                _, names, _ = self._sidecars.get(Path(p).parent, (root, set(), now))
                self._sidecars[Path(p).parent] = (root, names | {Path(p).name}, now)
        for folder, (root, names, last) in list(self._sidecars.items()):
            if now - last >= SIDECAR_QUIET_SECONDS:
                del self._sidecars[folder]
                entries += [(root, photo) for photo in photos_beside(folder, names)
                            if indexable(root, photo, self.exclude)]
        for folder, root in folders.items():
            entries += reconcile_folder(self.store, root, Path(folder), self.exclude)
        if entries:
            self.store.enqueue(entries, time.time() + self.debounce)

    # -- scanning -------------------------------------------------------------------------------------------

    def rescan(self) -> None:
        """Reconcile every root; roots that vanished go offline (kept), roots that came back are watched again.
        Trashed vectors older than a day go at the same pace (a scan every ``rescan_seconds``)."""
        self.store.purge_trash(time.time() - TRASH_SECONDS)
        for root in self.roots:
            if not root.is_dir():
                if root not in self._offline:
                    self.log(f"{root} is offline (missing or unmounted); its entries are kept")
                self._offline.add(root)
                self._unwatch(root)
                self.store.set_root(root, online=False)
                continue
            self._offline.discard(root)
            self._watch(root)  # before the scan: a change during the scan is caught by one or the other
            changed = reconcile(self.store, root, self.exclude)
            self.store.enqueue(changed, time.time())
            self.store.set_root(root, online=True, scanned_at=time.time())
            if changed:
                self.log(f"{root}: {len(changed)} to look at after the scan")

    def _log_skip(self, skip: Skip) -> None:
        self.log(f"skipped {skip.path}: {skip.reason}")

    # -- the loop -------------------------------------------------------------------------------------------

    def step(self) -> int:
        """Index one batch of due paths; returns how many paths it settled (0: nothing due)."""
        self._drain_inbox()
        batch = self.store.due(time.time(), BATCH_FILES)
        if not batch:
            return 0
        if self._busy_since is None:
            self._busy_since = time.time()
        dues = {path: due for _, path, due in batch}

        def dequeue(paths: list[Path]) -> None:
            for path in paths:
                self.store.dequeue(path, dues[path])

        counted = 0

        def progress(done: int, _total: int, _items: int) -> None:  # after each model call and commit: a live rate
            nonlocal counted
            self._record(done - counted)
            counted = done

        def between() -> None:  # before each model call: a pause holds it, a stop drops the batch (still queued)
            while self.paused.is_set() and not self.stop.is_set():
                self.stop.wait(0.2)
            if self.stop.is_set():
                raise Interrupted

        try:
            stats = index_files(
                self.store, self.model, [(root, path) for root, path, _ in batch], self.options,
                progress=progress, on_commit=dequeue, offline_roots=frozenset(self._offline), between=between,
            )
        except Interrupted:
            return 0
        for skip in stats.skipped:
            self._log_skip(skip)
        self._record(len(batch) - counted)
        self.store.ensure_prefilter()
        return len(batch)

    def _record(self, files: int) -> None:
        """Heartbeat and rate: files settled over the last minute of work (idle time does not count)."""
        now = time.time()
        self._done_times = [(t, n) for t, n in self._done_times if now - t < 60] + [(now, files)]
        span = max(now - max(self._busy_since or now, now - 60), 1.0)
        rate = sum(n for _, n in self._done_times) / span
        self.store.set_meta(STATUS_KEY, json.dumps({
            "pid": os.getpid(), "started": self._started, "heartbeat": now, "rate": round(rate, 2),
        }))

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Scan, then follow events until ``stop`` is set."""
        logging.getLogger("watchdog").addHandler(self._alarm)
        try:
            self._next_scan = time.time()  # the first turn scans every root
            full = False
            registered = False
            while not self.stop.is_set():
                try:
                    if not registered:  # writes too: a daemon started on a full disk waits like one filled later
                        self.store.bind_model(self.model.name, self.model.dim, self.model.image_max_pixels)
                        for root in self.roots:
                            self.store.set_root(root, online=root.is_dir())
                        self.store.ensure_prefilter()  # an index built by `index`, or in an older layout
                        reread_photos(self.store)  # an index made before photos' dates and words were read
                        registered = True
                    if not self._turn():
                        break
                except ModelUnavailableError as err:
                    # A served model is gone or restarting: the batch was not written and its paths stay queued.
                    self.log(f"{err}; retrying in {self.retry_seconds:.0f} s")
                    self.stop.wait(self.retry_seconds)
                    continue
                except DiskFullError as err:
                    # Nothing of the failed batch was written and its paths are still queued: wait for space.
                    if not full:
                        self.log(f"{err}; waiting for free space (retrying every {self.retry_seconds:.0f} s)")
                    full = True
                    self.stop.wait(self.retry_seconds)
                    continue
                if full:  # events that arrived meanwhile may have found no room in the queue: scan for them
                    self.log("there is space again: indexing goes on, after a scan")
                    self._next_scan = time.time()
                    full = False
                if ready and self._next_scan > time.time():  # the first scan is done
                    ready()
                    ready = None
        finally:
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=5)
            logging.getLogger("watchdog").removeHandler(self._alarm)

    def _turn(self) -> bool:
        """One pass of the loop: a scan when one is due, else a batch or a wait; False: stop."""
        if not self.store.still_on_disk():
            self.log(f"the index {self.store.path} was deleted or replaced: stopping (start again to build a new "
                     "one from the folders)")
            return False
        if self.paused.is_set():
            self.stop.wait(0.2)
            return True
        if self._inbox.overflowed.is_set():
            self._inbox.overflowed.clear()
            self.log(f"inotify queue overflowed (events lost): scanning in {OVERFLOW_RESCAN_SECONDS:.0f} s")
            self._next_scan = min(self._next_scan, time.time() + OVERFLOW_RESCAN_SECONDS)
        if time.time() >= self._next_scan:
            self.rescan()
            self._next_scan = time.time() + self.rescan_seconds
        elif not self.step():
            self._idle(self._next_scan)
        return True

    def _idle(self, next_scan: float) -> None:
        self._busy_since, self._done_times = None, []
        self._record(0)
        next_due = self.store.next_due()
        quiet = min((last + SIDECAR_QUIET_SECONDS for _, _, last in self._sidecars.values()), default=next_scan)
        wait = min(next_scan, next_due if next_due is not None else next_scan, quiet, time.time() + 5.0) - time.time()
        self._inbox.wake.clear()
        until = time.time() + max(wait, 0.05)
        while not self.stop.is_set() and time.time() < until:  # a stop ends the wait within 0.2 s
            if self._inbox.wake.wait(min(0.2, until - time.time())):
                break


def reconcile_folder(store: Store, root: Path, folder: Path, exclude: frozenset[str]) -> list[tuple[Path, Path]]:
    """A folder appeared, vanished or moved under ``root``: everything stored below it and on disk below it."""
    prefix = str(folder).rstrip(os.sep) + os.sep
    entries = [(root, Path(p)) for p in store.paths_with_prefix(prefix)]
    if folder.is_dir():
        entries += under(root, folder, exclude)
    return entries
