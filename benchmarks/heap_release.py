"""What handing the freed heap back after each model call (models/heap.py) costs in speed: an interleaved A/B.

One loaded model, each round running the same calls twice, once with the product's release after each call and
once with it replaced by nothing, the order alternating between rounds so drift falls on both: the sample photos
embedded one call each, four 180-word passages in one call, a query, a top-10 rerank of passages. After a
release, the next call's allocations fault their pages in again; this measures what that costs. The memory it
saves is measured by ``preset_cost.py`` run before and after the change (the peak is a process's, so both ways
cannot share one). Prints one JSON object: per call kind, the median seconds and each round's.

    python benchmarks/heap_release.py MODEL [--dtype float32] [--rounds 8] [--photos 4] [--out FILE]

MODEL: anything ``--model`` takes; a random model at a preset's real size is what ``preset_cost.py --model-dir
DIR`` builds into DIR.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import freeret_tui.engine.models.hf as hf
from freeret_tui.engine.models import heap, load_model
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.types import Content

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent.parent / "shared" / "samples" / "photos"


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--photo-dir", type=Path, default=PHOTOS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    model = load_model(args.model, dtype=args.dtype)
    photos = [Content(image=p) for p in sorted(args.photo_dir.iterdir())[: args.photos]]
    if not model.supports_images:
        photos = []
    words = (HERE.parent / "README.md").read_text(encoding="utf-8").split()
    passages = [Content(text=" ".join(words[i * 180 : (i + 1) * 180])) for i in range(10)]
    query = Content(text="how the prefilter reads its blocks")
    calls: dict[str, Callable[[], object]] = {
        "photo": lambda: [model.embed([p], Side.CANDIDATE) for p in photos],
        "passages_4_in_one_call": lambda: model.embed(passages[:4], Side.CANDIDATE),
        "query": lambda: model.embed([query], Side.QUERY),
        "rerank_top10_passages": lambda: model.rerank(query, passages),
    }
    if not photos:
        del calls["photo"]
    rounds: dict[str, dict[str, list[float]]] = {"release": {}, "none": {}}
    for n in range(args.rounds):
        for way in ("release", "none") if n % 2 == 0 else ("none", "release"):
            hf.release_freed = heap.release_freed if way == "release" else (lambda: False)
            for name, call in calls.items():
                per = len(photos) if name == "photo" else 1
                rounds[way].setdefault(name, []).append(round(_seconds(call) / per, 4))
    hf.release_freed = heap.release_freed
    result = {
        "model": args.model,
        "dtype": model.dtype,
        "machine": platform.processor() or platform.machine(),
        "rounds": args.rounds,
        "median_s": {way: {k: statistics.median(v) for k, v in r.items()} for way, r in rounds.items()},
        "release_over_none": {k: round(statistics.median(rounds["release"][k]) / statistics.median(v), 3)
                              for k, v in rounds["none"].items()},
        "each_round_s": rounds,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
