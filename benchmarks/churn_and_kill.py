"""Churn-and-kill, the long version of tests/test_daemon.py's check: random file operations across two folders
while ``freeret-tui daemon run`` is killed with SIGKILL at random moments and restarted; then one clean run.
Prints one JSON object: operations done, lost and ghost entries (both must be empty), and embedded items
against the distinct contents written (no content may be embedded twice).

    python benchmarks/churn_and_kill.py [--kills 20] [--ops 40] [--seed 1]

Uses the tiny random Idefics3 model built by the test suite (the model's quality does not matter here).
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="freeret-churn-"))
    model = tiny_models.build_idefics3(work / "tiny-idefics3")
    roots = [work / "a", work / "b"]
    for root in roots:
        root.mkdir()
    env = dict(os.environ, FREERET_DATA_DIR=str(work / "data"), HF_HUB_OFFLINE="1")
    result = churn.churn_and_kill(model, roots, env, work / "daemon.log", args.kills, args.ops, args.seed,
                                  converge_timeout=300)
    result["ok"] = not result["lost"] and not result["ghosts"] and result["queued"] == 0 and (
        result["embedded_items"] <= result["distinct_contents_written"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
