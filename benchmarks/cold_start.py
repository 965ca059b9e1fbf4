"""Cold start, measured as a person meets it: ``freeret-tui --help``, the TUI's first paint in a real terminal
(tmux), the model loading behind it, and the first (cold) against later (warm) queries. Prints one JSON object.

    python benchmarks/cold_start.py [--model smollm2] [--runs 3]

First paint = from launching ``freeret-tui FOLDER`` in a tmux pane until the query box's placeholder is on
screen (capture-pane polled every 10 ms). RSS is read from /proc at that moment, with whether torch is mapped.
Every run uses a new, empty cache of converted GGUF models (``FREERET_CACHE_DIR``): the first start with the model
is the first ever (a GGUF file is converted then), the second and the in-process load read the converted copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLACEHOLDER = "search your files"


def help_time(runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "freeret_tui", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"median_s": round(statistics.median(times), 3), "peak_rss_mb": round(peak_kb / 1024, 1)}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _torch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def tui_run(folder: Path, model: str, data: Path, wait_model: bool) -> dict[str, object]:
    session = f"freeret-bench-{os.getpid()}-{data.name}"
    # Named here: a tmux server that already runs starts the pane with its own environment, not this one's.
    command = ["env", f"FREERET_DATA_DIR={data}", f"FREERET_CACHE_DIR={os.environ['FREERET_CACHE_DIR']}",
               "HF_HUB_OFFLINE=1", sys.executable, "-m", "freeret_tui",
               str(folder), "--model", model, "--image-mode", "halfcell"]
    if not wait_model:
        command += ["--no-daemon", "--mode", "lexical", "--no-rerank"]
    start = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "36", *command], check=True)
    pid = int(subprocess.run(["tmux", "display", "-p", "-t", session, "#{pane_pid}"], capture_output=True,
                             text=True, check=True).stdout)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    try:
        while PLACEHOLDER not in screen():
            if time.perf_counter() - start > 120:
                raise TimeoutError(screen())
            time.sleep(0.01)
        out: dict[str, object] = {"first_paint_s": round(time.perf_counter() - start, 3),
                                  "rss_at_first_paint_mb": round(_rss_mb(pid), 1),
                                  "torch_loaded_at_first_paint": _torch_mapped(pid)}
        if wait_model:
            while "· watching" not in screen() and "· not watching" not in screen():
                if time.perf_counter() - start > 300:
                    raise TimeoutError(screen())
                time.sleep(0.05)
            out["model_ready_s"] = round(time.perf_counter() - start, 2)
            out["rss_model_loaded_mb"] = round(_rss_mb(pid), 1)
        return out
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def queries(model_name: str) -> dict[str, object]:
    """Model load, then the same kind of query cold (first) and warm (later), in one process."""
    from freeret_tui.engine.indexer import index_files
    from freeret_tui.engine.models import load_model
    from freeret_tui.engine.search import Query, Searcher, SearchOptions
    from freeret_tui.engine.store import Store

    start = time.perf_counter()
    model = load_model(model_name, "cpu", 0, 16, "auto")
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "notes"
        folder.mkdir()
        for n, text in enumerate(["The lighthouse guides boats.", "Sourdough needs a night in the fridge.",
                                  "The invoice was paid in April.", "Apples and pears in the orchard."]):
            (folder / f"{n}.txt").write_text(text)
        store = Store(Path(tmp) / "index.db")
        index_files(store, model, [(folder, p) for p in sorted(folder.iterdir())])
        searcher = Searcher(store, model)
        opts = SearchOptions(rerank=False)
        times = []
        for text in ["lighthouse", "bread fridge", "paid invoice", "orchard fruit"]:
            t = time.perf_counter()
            searcher.search(Query(text), opts)
            times.append(time.perf_counter() - t)
    return {"model_load_s": round(load_s, 2), "first_query_ms": round(times[0] * 1000, 1),
            "warm_query_ms_median": round(statistics.median(times[1:]) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is needed to measure the TUI's first paint")
    report: dict[str, object] = {"help": help_time(args.runs)}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FREERET_CACHE_DIR"] = str(Path(tmp) / "cache")
        folder = Path(tmp) / "notes"
        folder.mkdir()
        (folder / "a.txt").write_text("A note.")
        paints = [tui_run(folder, args.model, Path(tmp) / f"data{n}", wait_model=False) for n in range(args.runs)]
        report["tui_first_paint_no_model"] = {
            "median_s": statistics.median(p["first_paint_s"] for p in paints),
            "runs": paints,
        }
        report["tui_with_model"] = tui_run(folder, args.model, Path(tmp) / "data-model", wait_model=True)
        report["tui_with_model_again"] = tui_run(folder, args.model, Path(tmp) / "data-model", wait_model=True)
        report["queries"] = queries(args.model)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
