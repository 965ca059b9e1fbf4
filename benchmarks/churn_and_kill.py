"""Churn-and-kill, the long version of tests/test_daemon.py's check: random file operations across two folders
while ``freeret-tui daemon run`` is killed with SIGKILL at random moments and restarted; then one clean run.
Prints one JSON object: operations done, lost and ghost entries (both must be empty), and embedded items
against the distinct contents written (no content may be embedded twice).

    python benchmarks/churn_and_kill.py [--kills 20] [--ops 40] [--seed 1] [--prefilter-min 100]

Uses the tiny random Idefics3 model built by the test suite (the model's quality does not matter here). The few
hundred items a run holds stay far below the 20k vectors where the prefilter turns on; ``--prefilter-min N``
turns it on at N (cells of 16), so that the kills also land in its writes and rebuilds, and the report says
whether its tables still match the catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import churn  # noqa: E402
import tiny_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ops", type=int, default=40, help="file operations between two kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prefilter-min", type=int, help="build the prefilter from this many vectors on")
    args = parser.parse_args()
    launcher = [] if args.prefilter_min is None else churn.prefilter_launcher(args.prefilter_min, cell_size=16)
    work = Path(tempfile.mkdtemp(prefix="freeret-churn-"))
    model = tiny_models.build_idefics3(work / "tiny-idefics3")
    roots = [work / "a", work / "b"]
    for root in roots:
        root.mkdir()
    env = dict(os.environ, FREERET_DATA_DIR=str(work / "data"), HF_HUB_OFFLINE="1")
    result = churn.churn_and_kill(model, roots, env, work / "daemon.log", args.kills, args.ops, args.seed,
                                  converge_timeout=300, launcher=launcher)
    prefilter = result["prefilter"]
    result["ok"] = not result["lost"] and not result["ghosts"] and result["queued"] == 0 and (
        result["embedded_items"] <= result["distinct_contents_written"]) and not (
        prefilter["stray"] or prefilter["unfiled"] or prefilter["broken_members"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
