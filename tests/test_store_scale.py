"""The bit prefilter (recall against exact search, kind filters, vectors added after it is built) and the
``maintenance`` command (integrity check, space given back, search still right)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from freeret_tui.cli import main
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, Kind
from freeret_tui.settings import data_dir

DIM = 128


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    """Vectors around ``centres`` with a large shared offset, as residual-stream embeddings have."""
    labels = rng.integers(0, len(centres), n)
    return (5.0 + centres[labels] + 0.6 * rng.standard_normal((n, DIM))).astype(np.float32)


def fill(store: Store, vectors: np.ndarray, per_file: int = 100) -> None:
    store.bind_model("synthetic", DIM)
    for f, offset in enumerate(range(0, len(vectors), per_file)):
        block = vectors[offset : offset + per_file]
        kind = Kind.IMAGE if f % 2 else Kind.TEXT
        path = Path(f"/data/{f}.{'png' if kind is Kind.IMAGE else 'txt'}")
        chunks = [Chunk(path, kind, "", path.name, chunk_no=i) for i in range(len(block))]
        store.put_file(path, Path("/data"), f, 0.0, f"{f:064x}", chunks, block)


def test_prefilter_recall_and_filters(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, DIM))
    store = Store(tmp_path / "index.db")
    fill(store, clustered(rng, 4000, centres))
    queries = clustered(rng, 30, centres)
    assert not store.ensure_prefilter(minimum=10_000)  # small index: exact search only
    exact = [[i for i, _ in store.dense(q, 10)] for q in queries]
    assert store.ensure_prefilter(minimum=1000)
    fast = [[i for i, _ in store.dense(q, 10)] for q in queries]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, fast, strict=True)])
    assert recall >= 0.95, recall
    assert exact == [[i for i, _ in store.dense(q, 10, exact=True)] for q in queries]

    images = store.dense(queries[0], 10, kinds=[Kind.IMAGE])
    assert len(images) == 10
    assert {item.chunk.kind for item in store.items([i for i, _ in images]).values()} == {Kind.IMAGE}

    late = queries[1] * 1.0  # a vector added after the prefilter was built is found through it
    path = Path("/data/late.txt")
    (new_id,) = store.put_file(path, Path("/data"), 1, 0.0, "f" * 64, [Chunk(path, Kind.TEXT, "late")], late[None])
    assert store.dense(queries[1], 1)[0][0] == new_id

    reopened = Store(tmp_path / "index.db")  # another process (the TUI) uses the same prefilter
    assert reopened.dense(queries[1], 1)[0][0] == new_id


def test_maintenance_gives_space_back_and_keeps_search_right(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((50, DIM))
    store = Store(data_dir() / "index.db")
    vectors = clustered(rng, 3000, centres)
    fill(store, vectors)
    store.ensure_prefilter(minimum=1000)
    with store.transaction():
        for f in range(0, 30, 3):  # a third of the files go
            store.remove_file(Path(f"/data/{f}.{'png' if f % 2 else 'txt'}"))
    store.purge_trash(older_than=float("inf"))
    before = [i for i, _ in store.dense(vectors[150], 10)]
    store.close()

    assert main(["maintenance", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["integrity"] == "ok" and report["bytes_after"] < report["bytes_before"]
    after = Store(data_dir() / "index.db")
    assert [i for i, _ in after.dense(vectors[150], 10)] == before
    assert after.vector_count() == 2000
