"""Stage-1 search of an earlier revision and of this checkout, interleaved query by query in one process: what a
change to the prefilter's query costs or saves.

On a shared 2-core VM two runs of ``stage1_peers.py --prefilter-only`` over the same code minutes apart read
2.90 and 1.98 ms p50 for the same queries (mix, 100k), and 1.71 and 1.24 (clean), so two runs of different code,
one after the other, cannot resolve a tenth of a millisecond. Two worker processes asked in turn did no better
(a first version of this script): at 384-d with 16 probes the newer revision was faster in 318 of 400 queries on
the clean set and slower in 278 of 400 on the mixed one, where one process says faster in 390 and 389. So the earlier
revision's package is loaded beside this checkout's, in the same process (``git archive`` of its
``freeret_tui``, renamed ``freeret_base`` with its imports rewritten); each builds its own store from the same
vectors with its own code, and every query is asked of both in turn (after one untimed pass over them all), the
order alternating. Reported per set: the p50 of each, in how many queries this checkout was faster, recall@10
against the exact top-10 (NumPy) and in how many queries both returned the same ids in the same order.

    python benchmarks/stage1_ab.py BASE [--sets clean,mix] [--sizes 100000] [--dim 1536] [--queries 200]
        [--rounds 2] [--probes N] [--cache DIR] [--out FILE]

BASE is any revision git names; this checkout is its working tree as the package is installed (edits included).
``--probes`` fixes the cells a query reads (``ann.PROBES``; a flat set such as real text vectors reads up to 16).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stage1_latency import PER_FILE
from stage1_peers import vectors_for

BASE_NAME = "freeret_base"


def load_base(revision: str, folder: Path) -> tuple[str, ModuleType]:
    """``revision``'s package, importable as ``freeret_base`` from ``folder``; its commit and its package."""
    sha = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", revision], check=True, capture_output=True,
                         text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", sha, "freeret_tui"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "freeret_tui").rename(folder / BASE_NAME)
    for source in (folder / BASE_NAME).rglob("*.py"):
        source.write_text(source.read_text(encoding="utf-8").replace("freeret_tui", BASE_NAME), encoding="utf-8")
    sys.path.insert(0, str(folder))
    return sha, importlib.import_module(BASE_NAME)


def build(package: str, path: Path, vectors: np.ndarray) -> Any:
    """A store of ``vectors`` with its prefilter, written by ``package``'s own code (as stage1_latency.build)."""
    store_module = importlib.import_module(f"{package}.engine.store")
    types = importlib.import_module(f"{package}.engine.types")
    store = store_module.Store(path)
    store.bind_model("synthetic", vectors.shape[1])
    for f, offset in enumerate(range(0, len(vectors), PER_FILE)):
        name = Path(f"/bench/{f}.txt")
        chunks = [types.Chunk(name, types.Kind.TEXT, "", name.name, chunk_no=i)
                  for i in range(len(vectors[offset : offset + PER_FILE]))]
        store.put_file(name, Path("/bench"), 0, 0.0, f"{f:064x}", chunks, vectors[offset : offset + PER_FILE])
    store.build_prefilter()
    return store


def compare(stores: dict[str, Any], vectors: np.ndarray, queries: np.ndarray, rounds: int) -> dict[str, Any]:
    """Every query (unit length, as the ``vectors``) asked of both stores in turn, ``rounds`` times, after one
    untimed pass."""
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1  # item ids start at 1, in the vectors' order
    for query in queries:
        for store in stores.values():
            store.dense(query, 10)
    seconds: dict[str, list[float]] = {name: [] for name in stores}
    recall: dict[str, list[float]] = {name: [] for name in stores}
    same = 0
    for n in range(rounds):
        for index, query in enumerate(queries):
            found = {}
            for name in list(stores) if (n + index) % 2 == 0 else list(stores)[::-1]:
                start = time.perf_counter()
                found[name] = [i for i, _ in stores[name].dense(query, 10)]
                seconds[name].append(time.perf_counter() - start)
                recall[name].append(len(set(found[name]) & set(truth[index].tolist())) / 10)
            same += found["base"] == found["head"]
    base, head = seconds["base"], seconds["head"]
    return {
        "p50_ms": {name: round(statistics.median(s) * 1000, 3) for name, s in seconds.items()},
        "p95_ms": {name: round(sorted(s)[int(0.95 * (len(s) - 1))] * 1000, 3) for name, s in seconds.items()},
        "head_faster": f"{sum(h < b for h, b in zip(head, base, strict=True))} of {len(base)}",
        "recall@10": {name: round(float(np.mean(r)), 4) for name, r in recall.items()},
        "same_ids_in_order": f"{same} of {len(base)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--sets", default="clean,mix")
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--probes", type=int, default=0, help="cells a query reads (0: each revision's own rule)")
    parser.add_argument("--cache", type=Path, help="where stage1_peers.py keeps MiniLM vectors (--sets minilm)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    head_sha = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "head": head_sha, "rounds": args.rounds,
                              "probes": args.probes, "results": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report["base"], _ = load_base(args.base, tmp)
        if args.probes:
            for package in ("freeret_tui", BASE_NAME):
                importlib.import_module(f"{package}.engine.ann").PROBES = args.probes
        for size in (int(s) for s in args.sizes.split(",")):
            for kind in args.sets.split(","):
                vectors, queries = vectors_for(kind, size, args.dim, args.queries, cache=args.cache)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # stored at unit length, as stage1_peers
                queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
                stores = {name: build(package, tmp / f"{name}-{kind}-{size}.db", vectors)
                          for name, package in (("base", BASE_NAME), ("head", "freeret_tui"))}
                result = {"set": kind, "vectors": size, "dim": vectors.shape[1],
                          **compare(stores, vectors, queries, args.rounds)}
                for store in stores.values():
                    store.close()
                print(json.dumps(result), file=sys.stderr)
                report["results"].append(result)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
