"""Stage 1 against the libraries people would pick instead: the same vectors and queries, exact top-10 as truth.

Methods: this project's prefilter inside the SQLite file (k-means cells, sign bits, float16 rescore; swept over
probes and rescore pool), sqlite-vec exact, NumPy brute force (in RAM), FAISS IVF-Flat (swept over nprobe) and
HNSW (M 32, swept over efSearch), usearch HNSW in f16 and i8 (swept over expansion_search). For each: build time,
size on disk and held in RAM by the method itself, p50/p95 latency per query, recall@10 against the exact top-10
(NumPy over float32, cosine). Sets: ``clean`` (benchmarks/stage1_latency.py's synthetic topics), ``mix`` (its
``--mix 1.0``: items about two topics), and with ``--real N`` the anisotropy of N real SmolLM2 pre-MLP vectors
(standard-library docstring passages): mean cosine between random pairs and the share of variance on the first
principal direction. Writes a recall-vs-latency plot per set.

    python benchmarks/stage1_peers.py [--sizes 100000] [--sets clean,mix] [--queries 100] [--real 0]
        # JSON: benchmarks/stage1_peers.json (runs of other sets and sizes kept); plot: benchmarks/stage1_peers.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_vectors import anisotropy, minilm
from stage1_latency import build, percentiles, synthetic, timed

from freeret_tui.engine import ann
from freeret_tui.engine.store import prefilter as prefilter_module
from freeret_tui.engine.store import vectors as vectors_module


def vectors_for(kind: str, n: int, dim: int, n_queries: int, seed: int = 7,
                cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    if kind == "minilm":
        return minilm(n, n_queries, cache)
    rng = np.random.default_rng(seed)
    common = 3.0 * rng.standard_normal(dim, dtype=np.float32)
    topics = rng.standard_normal((max(n // 1000, 2), dim), dtype=np.float32)
    subtopics = rng.standard_normal((max(n // 10, 2), dim), dtype=np.float32)
    mix = 1.0 if kind == "mix" else 0.0
    return (synthetic(n, dim, rng, common, topics, subtopics, mix),
            synthetic(n_queries, dim, rng, common, topics, subtopics, mix))


def _recall(found: list[list[int]], truth: np.ndarray) -> float:
    shares = [len(set(f[:10]) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(shares)), 4)


def _unit_query(q: np.ndarray) -> np.ndarray:
    """A query as FAISS takes it: one unit-length float32 row."""
    return (q / np.linalg.norm(q))[None, :].astype(np.float32)


def _row(method: str, setting: str, build_s: float, disk_mb: float, ram_mb: float,
         search: Callable[[np.ndarray], list[int]], queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    times, found = timed(search, queries)
    row = {"method": method, "setting": setting, "build_s": round(build_s, 2), "disk_mb": round(disk_mb, 1),
           "ram_mb": round(ram_mb, 2), **percentiles(times), "recall@10": _recall(found, truth)}
    print(json.dumps(row), file=sys.stderr)
    return row


def _on_disk(vectors: np.ndarray, work: Path) -> np.ndarray:
    """The vectors as a file mapped into memory: at 1M x 1536 (6 GB) they then sit in the page cache, which the
    kernel can take back while a peer builds its own copy (held in RAM beside them, FAISS IVF's build was killed
    for memory on this 24 GB machine)."""
    path = work / "vectors.npy"
    np.save(path, vectors)
    return np.load(path, mmap_mode="r+")


def run(vectors: np.ndarray, queries: np.ndarray, work: Path, parts: set[str],
        save: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    """The rows of one set: NumPy brute force always, ``own`` (sqlite-vec exact and the prefilter) and ``peers``
    (FAISS, usearch) as asked."""
    # Unit length in place, stored so too (cosine ranks the same): at 1M x 1536 a second copy is 6 GB more.
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    normed = vectors
    large = len(vectors) > 200_000
    qnormed = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(qnormed @ normed.T), axis=1)[:, :10]  # row numbers; the store's item ids are these + 1
    rows = []

    def top10_numpy(q: np.ndarray) -> list[int]:
        sims = normed @ (q / np.linalg.norm(q))
        top = np.argpartition(-sims, 10)[:10]
        return [int(i) for i in top[np.argsort(-sims[top])]]

    rows.append(_row("numpy brute force", "float32 in RAM", 0.0, 0.0, normed.nbytes / 2**20, top10_numpy, queries,
                     truth))

    if "own" in parts:
        rows += _own(vectors, queries, truth, work, large)
        save(rows)  # kept, should a peer's build fail
    if "peers" not in parts:
        return rows

    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    for centred in (False, True) if not large else (False,):  # centring did not help them at 100k; 6 GB at 1M
        rows += peers(normed - normed.mean(axis=0) if centred else normed, queries, truth, work,
                      " (centred)" if centred else "")
    return rows


def _own(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, work: Path,
         large: bool) -> list[dict[str, Any]]:
    """sqlite-vec exact and this project's prefilter, swept over probes and rescore pool."""
    dim = vectors.shape[1]
    rows = []
    started = time.perf_counter()
    store, _ = build(work / "index.db", vectors)
    insert_s = time.perf_counter() - started
    few = 20 if large else len(queries)  # exact search reads every vector: 2+ s a query at 1M; recall is 1 anyway
    rows.append(_row("sqlite-vec exact", f"{few} queries", insert_s, os.path.getsize(work / "index.db") / 2**20, 0.0,
                     lambda q: [i - 1 for i, _ in store.dense(q, 10, exact=True)], queries[:few], truth[:few]))
    started = time.perf_counter()
    store.build_prefilter()
    prefilter_s = time.perf_counter() - started
    disk = os.path.getsize(work / "index.db") / 2**20
    defaults = ann.PROBES, ann.PROBE_MARGIN, vectors_module.PREFILTER_POOL
    # Fixed probe counts (margin 0), then the default rule (at least PROBES, more within PROBE_MARGIN).
    settings = [(probes, 0.0, f"probes {probes}") for probes in (2, 4, 8, 16)]
    settings.append((defaults[0], defaults[1], f"probes {defaults[0]}+ within {defaults[1]} (default)"))
    for probes, margin, label in settings:
        for pool in (100, 200, 400):
            ann.PROBES, ann.PROBE_MARGIN, vectors_module.PREFILTER_POOL = probes, margin, pool
            # RAM of its own: the cell centroids (the rest is SQLite's page cache, shared with the catalog).
            rows.append(_row("prefilter (this project)", f"{label}, pool {pool}", insert_s + prefilter_s,
                             disk, store.prefilter_cells * dim * 4 / 2**20,
                             lambda q: [i - 1 for i, _ in store.dense(q, 10)], queries, truth))
    # The defaults with every candidate of the pool rescored, as before the error bound cut it (same run).
    ann.PROBES, ann.PROBE_MARGIN, vectors_module.PREFILTER_POOL = defaults
    bound, prefilter_module.BOUND_EPSILON = prefilter_module.BOUND_EPSILON, 0.0
    rows.append(_row("prefilter (this project)", f"{settings[-1][2]}, pool {defaults[2]}, no error bound",
                     insert_s + prefilter_s, disk, store.prefilter_cells * dim * 4 / 2**20,
                     lambda q: [i - 1 for i, _ in store.dense(q, 10)], queries, truth))
    prefilter_module.BOUND_EPSILON = bound
    store.close()
    return rows


def _written_mb(index: Any, path: Path) -> float:
    """A FAISS index's size on disk, written there (``serialize_index`` would copy it in RAM: 6 GB at 1M)."""
    import faiss

    faiss.write_index(index, str(path))
    size = path.stat().st_size / 2**20
    path.unlink()
    return size


# The graphs' search widths (FAISS efSearch, usearch expansion_search). 128: where MiniLM's 1M crosses the
# prefilter's recall (0.946 at 64, 0.983 at 256); 1024 as nprobe 1024 below, for items about two topics.
_GRAPH_WIDTHS = (16, 64, 128, 256, 1024)


def peers(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, work: Path, label: str) -> list[dict[str, Any]]:
    """FAISS and usearch over ``base``: the unit vectors, or the unit vectors less their mean. Less a constant
    vector, every item's inner product with a query moves by the same amount, so the ranking is the cosine one;
    what changes is how well cells and graphs tell apart items that all lie in one narrow cone."""
    import faiss
    from usearch.index import Index

    n, dim = base.shape
    rows = []
    nlist = int(4 * np.sqrt(n))
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base[np.random.default_rng(0).choice(n, min(n, 40 * nlist, 100_000), replace=False)])
    ivf.add(base)
    ivf_s = time.perf_counter() - started
    ivf_bytes = _written_mb(ivf, work / "ivf.faiss")
    # 256 and 1024 (a quarter of the cells at 1M): on items about two topics no setting up to 64 reached 0.95, so
    # whether any does, and at what cost, is what the prefilter's latency there is measured against.
    for nprobe in (1, 4, 16, 64, 256, 1024):
        ivf.nprobe = nprobe
        rows.append(_row("FAISS IVF-Flat" + label, f"nlist {nlist}, nprobe {nprobe}", ivf_s, ivf_bytes, ivf_bytes,
                         lambda q, ivf=ivf: ivf.search(_unit_query(q), 10)[1][0].tolist(),
                         queries, truth))
    del ivf, quantizer

    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 64
    hnsw.add(base)
    hnsw_s = time.perf_counter() - started
    hnsw_bytes = _written_mb(hnsw, work / "hnsw.faiss")
    for ef in _GRAPH_WIDTHS:
        hnsw.hnsw.efSearch = ef
        rows.append(_row("FAISS HNSW" + label, f"M 32, efSearch {ef}", hnsw_s, hnsw_bytes, hnsw_bytes,
                         lambda q, hnsw=hnsw: hnsw.search(_unit_query(q), 10)[1][0].tolist(),
                         queries, truth))
    del hnsw

    for dtype in ("f16", "i8"):
        index = Index(ndim=dim, metric="ip", dtype=dtype, connectivity=16, expansion_add=64)
        started = time.perf_counter()
        index.add(np.arange(n), base, threads=os.cpu_count() or 1)
        built_s = time.perf_counter() - started
        path = work / f"usearch-{dtype}.bin"
        index.save(str(path))
        for ef in _GRAPH_WIDTHS:
            index.expansion_search = ef
            rows.append(_row(f"usearch HNSW {dtype}{label}", f"M 16, expansion {ef}", built_s,
                             path.stat().st_size / 2**20, index.memory_usage / 2**20,
                             lambda q, index=index: index.search(q / np.linalg.norm(q), 10).keys.tolist(),
                             queries, truth))
        del index
    return rows


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["clean", "mix", "minilm"]
    results = sorted(report["results"], key=lambda r: (r["vectors"], order.index(r["set"]) if r["set"] in order else 9))
    columns = min(3, len(results))
    lines = -(-len(results) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(6 * columns, 4.5 * lines), dpi=110, squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.set_visible(False)
    # One colour and marker per method in every panel.
    methods = sorted({row["method"] for result in results for row in result["rows"]})
    colours = plt.get_cmap("tab20").colors
    style = {m: (colours[n % len(colours)], "os^Dv<>p"[n % 8]) for n, m in enumerate(methods)}
    for ax, result in zip(axes.flat, results, strict=False):
        for method in dict.fromkeys(r["method"] for r in result["rows"]):
            rows = sorted((r for r in result["rows"] if r["method"] == method), key=lambda r: r["p50_ms"])
            colour, marker = style[method]
            if method.startswith("prefilter"):  # a sweep over probes and pool: points, and its default ringed
                ax.scatter([r["p50_ms"] for r in rows], [r["recall@10"] for r in rows], color=colour, marker=marker,
                           s=18, label=method)
                chosen = [r for r in rows if "default" in r["setting"] and "no error bound" not in r["setting"]
                          and f"pool {vectors_module.PREFILTER_POOL}" in r["setting"]]
                ax.scatter([r["p50_ms"] for r in chosen], [r["recall@10"] for r in chosen], facecolors="none",
                           edgecolors="black", s=120, label="prefilter default")
                continue
            ax.plot([r["p50_ms"] for r in rows], [r["recall@10"] for r in rows], marker=marker, color=colour,
                    linestyle="--" if "centred" in method else "-", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per query (ms, log)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"{result['set']}, {result['vectors']:,} × {result['dim']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--sets", default="clean,mix")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--cache", type=Path, help="keep the MiniLM vectors in this folder, for a later run")
    parser.add_argument("--real", type=int, default=0, help="also measure N real SmolLM2 vectors' anisotropy")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from stage1_peers.json")
    parser.add_argument("--prefilter-only", action="store_true",
                        help="re-measure this project's rows only; the JSON keeps the peers' rows of each set")
    parser.add_argument("--peers-only", action="store_true",
                        help="re-measure the peers' rows only; the JSON keeps this project's rows of each set")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((HERE / "stage1_peers.json").read_text()), HERE / "stage1_peers.png")
        return
    parts = {"own"} if args.prefilter_only else {"peers"} if args.peers_only else {"own", "peers"}
    partial = parts != {"own", "peers"}
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "results": []}
    for size in (int(s) for s in args.sizes.split(",") if s):  # --sizes "" with --real: the real vectors only
        for name in (s for s in args.sets.split(",") if s):
            vectors, queries = vectors_for(name, size, args.dim, args.queries, cache=args.cache)
            result: dict[str, Any] = {"set": name, "vectors": size, "dim": vectors.shape[1], "rows": []}
            report["results"].append(result)

            def save(rows: list[dict[str, Any]], result: dict[str, Any] = result) -> None:
                result["rows"] = rows
                _write(report, partial)

            with tempfile.TemporaryDirectory() as tmp:
                if size > 200_000:
                    vectors = _on_disk(vectors, Path(tmp))
                save(run(vectors, queries, Path(tmp), parts, save))
            del vectors
    if args.real:
        report["smollm2_anisotropy"] = anisotropy(args.real)
    print(json.dumps(_write(report, partial), indent=1))


def _write(report: dict[str, Any], partial: bool) -> dict[str, Any]:
    """Merge ``report`` into stage1_peers.json, redraw the plot; the merged report. Runs of other sets or sizes
    already there are kept (a 1M run need not redo the 100k ones); after a ``partial`` run so are the rows of the
    methods it did not re-measure, as they were measured."""
    path = HERE / "stage1_peers.json"
    merged = json.loads(json.dumps(report))
    if path.exists():
        earlier = json.loads(path.read_text())
        done = {(r["set"], r["vectors"]) for r in merged["results"]}
        if partial:
            kept = {(r["set"], r["vectors"]): r["rows"] for r in earlier["results"]}
            for result in merged["results"]:
                mine = {row["method"] for row in result["rows"]}
                result["rows"] += [row for row in kept.get((result["set"], result["vectors"]), [])
                                   if row["method"] not in mine]
        merged["results"] = [r for r in earlier["results"] if (r["set"], r["vectors"]) not in done] + merged["results"]
        merged.setdefault("smollm2_anisotropy", earlier.get("smollm2_anisotropy"))
    path.write_text(json.dumps(merged, indent=1) + "\n")
    plot(merged, HERE / "stage1_peers.png")
    return merged


if __name__ == "__main__":
    main()
