"""The daemon under load: N files dropped into a watched folder at once, then a burst of churn at a set rate.
Samples the daemon's RSS and queue length every 0.5 s, and checks at the end that nothing was lost (the same
checker as the churn-and-kill test). Prints one JSON object.

    python benchmarks/daemon_load.py [--files 10000] [--churn-rate 1000] [--churn-seconds 10] [--prefilter-min N]

Uses the tiny random Idefics3 model built by the test suite: this measures the daemon and the store, not the
model (its own memory is reported as the RSS after start-up, before any file arrives). ``--prefilter-min N``
turns the prefilter on from N vectors (cells of 256) instead of the product's 20k, so that the load lands on its
writes and rebuilds too; the report then says whether its tables match the catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import churn  # noqa: E402
import tiny_models  # noqa: E402

from freeret_tui.engine.store import Store  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--churn-rate", type=int, default=1000, help="file operations per second")
    parser.add_argument("--churn-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--prefilter-min", type=int, help="build the prefilter from this many vectors on")
    args = parser.parse_args()
    launcher = [] if args.prefilter_min is None else churn.prefilter_launcher(args.prefilter_min, cell_size=256)
    work = Path(tempfile.mkdtemp(prefix="freeret-load-"))
    model = tiny_models.build_idefics3(work / "tiny-idefics3")
    root = work / "inbox"
    root.mkdir()
    env = dict(os.environ, FREERET_DATA_DIR=str(work / "data"), HF_HUB_OFFLINE="1")
    child = churn.start_daemon(model, [root], env, work / "daemon.log", ready=True, launcher=launcher)
    store = Store(work / "data" / "index.db")
    samples: list[dict[str, float]] = []
    started = time.monotonic()

    def sample() -> None:
        samples.append({"t": round(time.monotonic() - started, 1), "rss_mb": round(rss_mb(child.pid), 1),
                        "queued": store.queue_length(), "indexed": store.counts().get("indexed", 0)})

    try:
        sample()
        idle_rss = samples[0]["rss_mb"]
        rng = random.Random(0)
        for n in range(args.files):  # the drop: as fast as the disk takes them
            (root / f"drop-{n:05d}.txt").write_text(f"dropped note {n}: " + " ".join(rng.sample(churn.WORDS, 6)))
        drop_s = time.monotonic() - started
        sample()
        churner = churn.Churner([root], rng)
        churn_start = time.monotonic()
        done = 0
        while time.monotonic() - churn_start < args.churn_seconds:
            churner.step()
            done += 1
            ahead = done / args.churn_rate - (time.monotonic() - churn_start)
            if ahead > 0:
                time.sleep(ahead)
            if done % args.churn_rate == 0:
                sample()
        churn_rate = done / (time.monotonic() - churn_start)
        report = churn.compare(store, [root])
        while not report.clean and time.monotonic() - started < args.timeout:
            time.sleep(0.5)
            sample()
            report = churn.compare(store, [root])
        sample()
        print(json.dumps({
            "files_dropped": args.files,
            "drop_seconds": round(drop_s, 1),
            "churn_ops": done,
            "churn_ops_per_s": round(churn_rate, 1),
            "churn_ops_by_kind": churner.ops,
            "converged_s": round(time.monotonic() - started, 1),
            "lost": len(report.lost),
            "ghosts": len(report.ghosts),
            "queued_at_end": report.queued,
            "files_at_end": len(churn.disk_state([root])),
            "rss_after_start_mb": idle_rss,
            "rss_peak_mb": max(s["rss_mb"] for s in samples),
            "queue_peak": max(s["queued"] for s in samples),
            "prefilter": churn.prefilter_state(store),
            "samples": samples[:: max(1, len(samples) // 40)],
        }))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=120)


if __name__ == "__main__":
    main()
