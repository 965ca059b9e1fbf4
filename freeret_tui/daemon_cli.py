"""``freeret-tui daemon start|run|stop|status``: the process side of the watching daemon.

``run`` is the daemon itself in the foreground (what ``start`` spawns, and what a systemd user service runs);
``start`` spawns it detached with its output in ``<data dir>/daemon.log``; ``stop`` sends SIGTERM and waits for
the lock to be released; ``status`` reads what the daemon records in the database, so it works from any process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from freeret_tui.display import duration, rate, visible
from freeret_tui.engine.daemon import DaemonLock, holder_pid
from freeret_tui.engine.private import open_private
from freeret_tui.engine.session import Session
from freeret_tui.errors import FreeretError, UsageError
from freeret_tui.settings import Settings, data_dir

LOG_NAME = "daemon.log"
# How long `start` waits for the child to take the lock, and `stop` for it to let go (a batch in flight
# finishes first: at the default batch size that is a few seconds on a laptop CPU).
START_WAIT_S = 20.0
STOP_WAIT_S = 60.0
FAILURES_PAGE = 200  # files not indexed per page of `daemon status --json --page N`


def run(args: argparse.Namespace, settings: Settings) -> int:
    return {"start": _start, "run": _run, "stop": _stop, "status": _status}[args.action](args, settings)


def _session(args: argparse.Namespace, settings: Settings) -> Session:
    config = settings.session_config(getattr(args, "model", None), getattr(args, "image_max_pixels", None))
    return Session(data_dir(), config)


def _roots(args: argparse.Namespace, session: Session) -> list[Path]:
    """The folders to watch: those named, else those watched last time."""
    if args.paths:
        missing = [str(p) for p in args.paths if not p.expanduser().is_dir()]
        if missing:
            raise UsageError(f"not a folder: {', '.join(missing)}")
        return [p.expanduser().resolve() for p in args.paths]
    roots = [path for path, _online, _scanned in session.store.roots()]
    if not roots:
        raise UsageError("no folders to watch yet: name them, e.g. `freeret-tui daemon start ~/Pictures`")
    return roots


def _check_flags(args: argparse.Namespace) -> None:
    if args.nice < 0:
        raise UsageError("--nice must be 0 or more (a daemon never raises its own priority)")
    if args.rescan_minutes <= 0:
        raise UsageError("--rescan-minutes must be more than 0")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    _check_flags(args)
    directory = data_dir()
    lock = DaemonLock(directory)
    lock.acquire()  # before the model loads, so a second daemon is refused at once
    try:
        session = _session(args, settings)
        roots = _roots(args, session)
        if args.nice:
            os.nice(args.nice)
        _log(f"daemon pid {os.getpid()} watching {', '.join(map(str, roots))}; loading model {session.config.model}")
        session.load_model()
        daemon = session.daemon(roots, rescan_seconds=args.rescan_minutes * 60, log=_log)

        def stop(signum: int, _frame: FrameType | None) -> None:
            _log(f"signal {signal.Signals(signum).name}: stopping after the batch in flight")
            daemon.stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        daemon.run(ready=lambda: _log("initial scan done; following changes"))
        _log("stopped")
        return 0
    finally:
        lock.release()


_unwritten = 0  # log lines the disk had no room for (the daemon itself waits for space; its log must not kill it)


def _log(message: str) -> None:
    global _unwritten
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {visible(message)}"
    if _unwritten:
        line = f"{line} ({_unwritten} earlier log lines were lost: the disk was full)"
    try:
        os.write(sys.stderr.fileno(), f"{line}\n".encode())  # unbuffered: a line refused is not retried later
    except OSError:
        _unwritten += 1
    else:
        _unwritten = 0


def _start(args: argparse.Namespace, settings: Settings) -> int:
    _check_flags(args)
    directory = data_dir()
    pid = holder_pid(directory)
    if pid is not None:
        raise FreeretError(f"a daemon is already running for {directory} (pid {pid})")
    roots = _roots(args, _session(args, settings))
    command = [sys.executable, "-m", "freeret_tui", "daemon", "run", *map(str, roots),
               "--nice", str(args.nice), "--rescan-minutes", str(args.rescan_minutes)]
    for flag in ("model", "device", "dtype", "batch_size", "image_max_pixels"):
        value = getattr(args, flag)
        if value is not None:
            command += [f"--{flag.replace('_', '-')}", str(value)]
    log_path = directory / LOG_NAME
    with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_APPEND), "ab") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # survives the terminal closing
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if holder_pid(directory) == child.pid:
            print(f"daemon started (pid {child.pid}) watching {', '.join(map(str, roots))}; log: {log_path}")
            return 0
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise FreeretError(f"the daemon exited at start (status {child.returncode}): {tail[0]}")
        time.sleep(0.05)
    raise FreeretError(f"the daemon (pid {child.pid}) did not take the lock within {START_WAIT_S:.0f}s; see {log_path}")


def _stop(_args: argparse.Namespace, _settings: Settings) -> int:
    directory = data_dir()
    pid = holder_pid(directory)
    if pid is None:
        print("no daemon is running")
        return 0
    if pid <= 0:
        raise FreeretError(f"the lock in {directory} is held but names no pid; stop the holder by hand")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        if holder_pid(directory) is None:
            print(f"daemon stopped (pid {pid})")
            return 0
        time.sleep(0.1)
    raise FreeretError(f"the daemon (pid {pid}) is still finishing after {STOP_WAIT_S:.0f}s; try again")


def _status(args: argparse.Namespace, settings: Settings) -> int:
    directory = data_dir()
    session = _session(args, settings)
    status = session.status()
    c = status.counts
    not_indexed = c["failed"] + c["skipped"]
    if args.json:
        if args.page < 1:
            raise UsageError("--page counts from 1")
        files = session.failures(FAILURES_PAGE, (args.page - 1) * FAILURES_PAGE)
        print(json.dumps({**status.as_dict(), "not_indexed": {
            "total": not_indexed, "page": args.page, "pages": max(1, -(-not_indexed // FAILURES_PAGE)),
            "files": [{"path": p, "reason": r} for p, r in files]}}))
        return 0
    running = f"running (pid {status.running_pid})" if status.running_pid else "not running"
    print(f"daemon: {running}; data dir {directory}")
    for root in status.roots:
        print(f"  {visible(root['path'])}" + ("" if root["online"] else "  (offline: entries kept)"))
    print(f"indexed {c['indexed']}, queued {c['queued']}, failed {c['failed']}, skipped {c['skipped']}; "
          f"{c['items']} items")
    if status.rate_files_per_s and status.queued:
        print(f"rate {rate(status.rate_files_per_s)}, {duration(status.eta_s or 0)} left (newest files first)")
    for error in status.last_errors:
        print(f"  {visible(error['path'])}: {visible(error['reason'])}")
    if not_indexed > len(status.last_errors):
        print(f"  … {not_indexed - len(status.last_errors)} more: `freeret-tui daemon status --json --page 1` lists "
              f"them all, {FAILURES_PAGE} a page")
    return 0
