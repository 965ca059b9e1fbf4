"""Churn-and-kill checker: random file operations, a daemon killed with SIGKILL at random moments, and the
comparison of the index with the disk. Used by tests/test_daemon.py (short) and benchmarks/churn_and_kill.py
(long); no pytest here so the benchmark can import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freeret_tui.engine.daemon import STATUS_KEY, holder_pid
from freeret_tui.engine.scan import indexable, walk
from freeret_tui.engine.store import Store
from freeret_tui.engine.store.prefilter import block_ids

WORDS = ("harbour lighthouse tide kelp granite orchard cider ledger invoice sonata violin glacier moraine "
         "pancake lentil comet nebula tractor barley kestrel lantern quarry saddle walnut").split()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def disk_state(roots: list[Path]) -> dict[str, str]:
    """path → content hash of every file the daemon should have indexed."""
    return {str(p): sha256(p) for root, p in walk(roots) if indexable(root, p)}


@dataclass
class Report:
    lost: list[str]  # on disk, not (or with old content) in the index
    ghosts: list[str]  # in the index, not on disk
    queued: int

    @property
    def clean(self) -> bool:
        return not self.lost and not self.ghosts and self.queued == 0


def compare(store: Store, roots: list[Path]) -> Report:
    disk = disk_state(roots)
    stored = store.file_hashes()
    lost = sorted(p for p, sha in disk.items() if stored.get(p, (None, ""))[0] != sha)
    ghosts = sorted(p for p in stored if p not in disk)
    return Report(lost, ghosts, store.queue_length())


def wait_converged(store: Store, roots: list[Path], timeout: float) -> Report:
    """Poll until the index equals the disk (or ``timeout`` passes); the last comparison."""
    deadline = time.monotonic() + timeout
    report = compare(store, roots)
    while not report.clean and time.monotonic() < deadline:
        time.sleep(0.25)
        report = compare(store, roots)
    return report


@dataclass
class Churner:
    """Random file operations over ``roots``; every content it writes is distinct unless it copies a file."""

    roots: list[Path]
    rng: random.Random
    contents: set[str] = field(default_factory=set)  # hashes of every content ever written
    counter: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    # The files it knows of (walked once, then kept up to date): walking 10k files per operation capped the
    # load benchmark at 6 operations per second.
    known: list[Path] | None = None

    def _text(self) -> bytes:
        self.counter += 1
        words = " ".join(self.rng.choice(WORDS) for _ in range(8))
        data = f"note {self.counter}: {words}\n".encode()
        self.contents.add(hashlib.sha256(data).hexdigest())
        return data

    def _files(self) -> list[Path]:
        if self.known is None:
            self.known = [p for _, p in walk(self.roots)]
        return self.known

    def _new_path(self) -> Path:
        root = self.rng.choice(self.roots)
        folder = root / self.rng.choice(("", "a", "b", "a/deep"))
        folder.mkdir(parents=True, exist_ok=True)
        self.counter += 1
        return folder / f"f{self.counter}.txt"

    def step(self) -> None:
        files = self._files()
        op = self.rng.choice(("create", "create", "modify", "rename", "move", "delete", "replace", "copy")
                             if files else ("create",))
        self.ops[op] = self.ops.get(op, 0) + 1
        if op == "create":
            path = self._new_path()
            path.write_bytes(self._text())
            files.append(path)
            return
        index = self.rng.randrange(len(files))
        victim = files[index]
        if op == "modify":
            victim.write_bytes(self._text())
        elif op == "rename":
            files[index] = victim.with_name(f"r{self.counter}-{victim.name}")
            victim.rename(files[index])
            self.counter += 1
        elif op == "move":  # possibly across roots
            files[index] = self._new_path()
            os.replace(victim, files[index])
        elif op == "delete":
            victim.unlink()
            files[index] = files[-1]
            files.pop()
        elif op == "replace":  # how editors save: write a temp file, rename it over the original
            temp = victim.with_name(f".{victim.name}.swp")
            temp.write_bytes(self._text())
            os.replace(temp, victim)
        elif op == "copy":
            path = self._new_path()
            path.write_bytes(victim.read_bytes())
            files.append(path)


def prefilter_launcher(minimum: int, cell_size: int) -> list[str]:
    """A ``start_daemon`` launcher: the CLI with the prefilter turned on from ``minimum`` vectors, in cells of
    ``cell_size`` (the benchmarks' few hundred or thousand items stay far below the product's 20k), so that what
    they check covers its writes and rebuilds. The benchmarks' settings, not a flag of the product's."""
    code = ("import sys; from freeret_tui.cli import main; from freeret_tui.engine import ann; "
            "from freeret_tui.engine.store import vectors; "
            "vectors.PREFILTER_MIN, ann.CELL_SIZE = int(sys.argv.pop(1)), int(sys.argv.pop(1)); "
            "raise SystemExit(main())")
    return [sys.executable, "-c", code, str(minimum), str(cell_size)]


def start_daemon(model_dir: Path, roots: list[Path], env: dict[str, str], log: Path,
                 ready: bool = False, launcher: Sequence[str] = ()) -> subprocess.Popen:
    """``freeret-tui daemon run`` in a child process; returns once it holds the lock (``ready``: once its model
    is loaded and it has reported in, so a kill lands in scanning, embedding or committing, not in start-up).
    ``launcher``: what runs the CLI instead of ``python -m freeret_tui`` (a benchmark's settings)."""
    command = [*(launcher or (sys.executable, "-m", "freeret_tui")), "daemon", "run", *map(str, roots),
               "--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--batch-size", "4", "--nice", "0"]
    with log.open("ab") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    data_dir = Path(env["FREERET_DATA_DIR"])
    deadline = time.monotonic() + 60
    while holder_pid(data_dir) != child.pid:
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"daemon did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    if ready:
        store = Store(data_dir / "index.db")
        while json.loads(store.get_meta(STATUS_KEY) or "{}").get("pid") != child.pid:
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not get ready: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        store.close()
    return child


def prefilter_state(store: Store) -> dict[str, int]:
    """The prefilter against the catalog: its cells and entries, and what must be 0 — entries of items that are
    gone (``stray``), items filed in fewer cells than the others or not at all (``unfiled``), member rows that
    name a missing block (``broken_members``). All 0 without a prefilter."""
    if not store.prefilter_cells:
        return {"cells": 0, "entries": 0, "stray": 0, "unfiled": 0, "broken_members": 0}
    db = store._db
    filed: dict[int, int] = {}
    for entries, size in db.execute("SELECT entries, size FROM bit_blocks"):
        for item in block_ids(entries, size).tolist():
            filed[item] = filed.get(item, 0) + 1
    live = store.live_item_ids()
    blocks = {int(b) for (b,) in db.execute("SELECT block FROM bit_blocks")}
    members = [np.frombuffer(m, dtype=np.int64).tolist() for (m,) in db.execute("SELECT blocks FROM bit_members")]
    width = max(filed.values(), default=1)
    return {"cells": store.prefilter_cells, "entries": sum(filed.values()),
            "stray": sum(n for item, n in filed.items() if item not in live),
            "unfiled": sum(1 for item in live if filed.get(item, 0) < width),
            "broken_members": sum(1 for m in members if not set(m) <= blocks)}


def churn_and_kill(model_dir: Path, roots: list[Path], env: dict[str, str], log: Path, kills: int,
                   ops_per_round: int, seed: int, converge_timeout: float = 120.0,
                   launcher: Sequence[str] = ()) -> dict[str, object]:
    """Churn with ``kills`` SIGKILLs at random moments, then a clean run; the final comparison and counts, and
    the prefilter's (``prefilter_state``)."""
    rng = random.Random(seed)
    churner = Churner(roots, rng)
    started = time.monotonic()
    for _ in range(kills):
        child = start_daemon(model_dir, roots, env, log, ready=True, launcher=launcher)
        for _ in range(ops_per_round):
            churner.step()
            time.sleep(rng.uniform(0.0, 0.05))
        time.sleep(rng.uniform(0.0, 2.5))  # after the 1 s debounce: the kill lands in embedding, commit or idle
        child.send_signal(signal.SIGKILL)
        child.wait()
    child = start_daemon(model_dir, roots, env, log, launcher=launcher)
    store = Store(Path(env["FREERET_DATA_DIR"]) / "index.db")
    try:
        report = wait_converged(store, roots, converge_timeout)
        present = set(disk_state(roots).values())
        return {
            "kills": kills,
            "ops": churner.ops,
            "files": len(disk_state(roots)),
            "lost": report.lost,
            "ghosts": report.ghosts,
            "queued": report.queued,
            "distinct_contents_written": len(churner.contents),
            "distinct_contents_present": len(present),
            "embedded_items": store.embedded_items,
            "prefilter": prefilter_state(store),
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        store.close()
