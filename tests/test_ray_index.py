"""`index --ray`: the Ray Data pipeline (a local Ray cluster on 127.0.0.1 with token auth, the tiny Idefics3) makes
the same index as the local indexer over ~2k files — same files, items, skip reasons and vectors — also when its
workers are killed mid-run, and a run cut short resumes where its last commit left off."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, write_xmp

from freeret_tui.engine.indexer import IndexOptions
from freeret_tui.engine.session import Session, SessionConfig
from freeret_tui.engine.store import Store
from freeret_tui.engine.store.paths import path_key, path_text

WORDS = ("river mountain coffee rocket horse galaxy coin astronaut budget trip invoice garden violin harbour "
         "winter lantern orbit pasta ledger canyon").split()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 notes (some long enough for several passages), the sample photos (one saying when it was taken, one
    with Google Takeout's sidecar), a broken image and a copy."""
    from PIL import Image

    root = tmp_path_factory.mktemp("library")
    rng = random.Random(7)
    for n in range(2000):
        folder = root / f"folder{n % 13}"
        folder.mkdir(exist_ok=True)
        length = rng.choice((6, 12, 30, 60)) if n % 50 else 400
        (folder / f"note{n}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(length)))
    for photo in SAMPLES.iterdir():
        shutil.copy(photo, root / photo.name)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2019:07:14 18:30:00"  # DateTimeOriginal
    with Image.open(SAMPLES / "rocket.jpg") as rocket:
        rocket.save(root / "rocket.jpg", exif=exif.tobytes())
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    _takeout(root / "coffee.png", "Espresso at the harbour")
    shutil.copy(root / "folder0" / "note0.txt", root / "copy of note0.txt")
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    from freeret_tui.engine import ray_cluster

    ray_cluster.connect(None, num_cpus=2)
    import ray

    yield
    ray.shutdown()


def _takeout(photo: Path, description: str) -> None:
    (photo.parent / f"{photo.name}.supplemental-metadata.json").write_text(json.dumps(
        {"title": photo.name, "description": description, "photoTakenTime": {"timestamp": "1596283200"}}))


def _words(store: Store, photo: Path) -> str:
    return store._db.execute("SELECT text FROM items JOIN files ON files.id = items.file_id WHERE files.path = ?",
                             (path_key(photo),)).fetchone()[0]


def _config(model_dir: Path) -> SessionConfig:
    return SessionConfig(model=str(model_dir), device="cpu", dtype="float32", batch_size=4)


@pytest.fixture(scope="module")
def reference(library: Path, tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same files indexed in-process, as `freeret-tui index` does."""
    data = tmp_path_factory.mktemp("local-index")
    session = Session(data, _config(tiny_dirs["idefics3"]))
    session.load_model()
    session.index([library])
    return data


def _ray_index(data: Path, library: Path, model_dir: Path, progress=None):  # -> (IndexStats, removed)
    from freeret_tui.engine.ray_index import RayIndexOptions, index_with_ray

    options = RayIndexOptions(model=str(model_dir), device="cpu", dtype="float32", batch_size=4)
    data.mkdir(exist_ok=True)
    return index_with_ray(Store.in_dir(data), [library], options, IndexOptions(), progress)


def _contents(data: Path) -> tuple[list[tuple], dict[tuple, np.ndarray]]:
    db = Store.in_dir(data)._db
    files = sorted(db.execute("SELECT path, root, kind, size, mtime, sha256, status, error, taken FROM files")
                   .fetchall())
    items = {tuple(r[:7]): np.frombuffer(r[7], dtype=np.float32) for r in db.execute(
        "SELECT f.path, i.chunk_no, i.kind, i.title, i.text, i.page, i.line_start, v.embedding FROM items i "
        "JOIN files f ON f.id = i.file_id JOIN item_vectors v ON v.item_id = i.id")}
    return files, items


def _same_index(data: Path, reference: Path) -> None:
    files, items = _contents(data)
    ref_files, ref_items = _contents(reference)
    assert files == ref_files
    assert len(files) == 2010 and sum(1 for f in files if f[6] == "failed") == 1  # broken.jpg, with its reason
    # rocket.jpg by its EXIF, coffee.png by its sidecar, the other two by the XMP packets the samples carry.
    assert [Path(os.fsdecode(f[0])).name for f in files if f[8] is not None] == [
        "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "rocket.jpg"]
    assert _words(Store.in_dir(data), Path(path_text(files[0][1])) / "coffee.png") == "Espresso at the harbour"
    assert items.keys() == ref_items.keys() and len(items) > 2000
    for key, vector in items.items():
        np.testing.assert_allclose(vector, ref_items[key], atol=1e-5, err_msg=str(key))


def test_a_ray_data_index_equals_the_local_index(library, reference, tiny_dirs, cluster, tmp_path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from freeret_tui.engine.store import vectors

    monkeypatch.setattr(vectors, "PREFILTER_MIN", 1000)  # read by the driver, which writes the index
    stats, removed = _ray_index(tmp_path / "ray", library, tiny_dirs["idefics3"])
    assert (stats.files_seen, stats.files_indexed, len(stats.skipped), removed) == (2010, 2009, 1, 0)
    _same_index(tmp_path / "ray", reference)
    assert Store.in_dir(tmp_path / "ray").prefilter_cells > 1  # searched through cells, as a daemon's index is
    again, _ = _ray_index(tmp_path / "ray", library, tiny_dirs["idefics3"])  # nothing changed: nothing to do
    assert (again.files_unchanged, again.files_indexed, again.items_added) == (2010, 0, 0)


def test_copies_and_moves_reuse_the_indexed_vectors(library, tiny_dirs, cluster, tmp_path) -> None:
    moved = tmp_path / "library"
    shutil.copytree(library, moved)
    _ray_index(tmp_path / "ray", moved, tiny_dirs["idefics3"])
    store = Store.in_dir(tmp_path / "ray")
    embedded = store.embedded_items
    shutil.copy(moved / "folder1" / "note1.txt", moved / "note1 (copy).txt")
    (moved / "folder2" / "note2.txt").rename(moved / "folder3" / "note2.txt")
    shutil.copy(moved / "coffee.png", moved / "coffee (copy).png")  # without its sidecar: none of its words
    _takeout(moved / "coffee.png", "Cortado on the pier")  # the sidecar rewritten: the photo's words again
    # A word written into a photo: its pixels as they were.
    write_xmp(moved / "rocket.jpg", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
              '02/22-rdf-syntax-ns#"><rdf:Description xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
              'photoshop:City="Kourou"/></rdf:RDF></x:xmpmeta>')
    stats, removed = _ray_index(tmp_path / "ray", moved, tiny_dirs["idefics3"])
    # Unchanged: the 2,012 files found less the three indexed, coffee.png and rocket.jpg among them.
    assert (stats.files_indexed, stats.files_unchanged, stats.files_reread, stats.items_added, removed) == (
        3, 2009, 2, 0, 1)
    assert store.embedded_items == embedded  # the model ran for none
    assert (_words(store, moved / "coffee.png"), _words(store, moved / "coffee (copy).png")) == (
        "Cortado on the pier", "")
    assert _words(store, moved / "rocket.jpg") == "Kourou"
    for name in ("note1 (copy).txt", "folder3/note2.txt"):
        assert store.file_row(moved / name).status == "indexed"


def _kill(pattern: str) -> set[int]:
    pids = {int(p) for p in subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True,
                                           check=False).stdout.split()}
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def test_killed_workers_lose_nothing_and_store_nothing_twice(library, reference, tiny_dirs, cluster,
                                                             tmp_path) -> None:
    killed: set[int] = set()

    def progress(done: int, total: int, _items: int) -> None:
        if not killed and done < total:  # after the first commit, mid-run
            killed.update(_kill(r"MapBatches\(Embedder\)"), _kill(r"MapBatches\(Extractor\)"))

    _ray_index(tmp_path / "ray", library, tiny_dirs["idefics3"], progress)
    assert killed, "no Ray Data worker was found to kill"
    _same_index(tmp_path / "ray", reference)


class _CutShort(Exception):
    pass


def test_a_run_cut_short_resumes_from_its_last_commit(library, reference, tiny_dirs, cluster, tmp_path) -> None:
    committed: list[int] = []

    def progress(done: int, _total: int, _items: int) -> None:
        committed.append(done)
        raise _CutShort  # the driver dies right after its first commit

    with pytest.raises(_CutShort):
        _ray_index(tmp_path / "ray", library, tiny_dirs["idefics3"], progress)
    stats, _ = _ray_index(tmp_path / "ray", library, tiny_dirs["idefics3"])
    # What the first run committed (broken.jpg's failure among it, or not) is not looked at again.
    assert stats.files_unchanged == committed[0]
    assert stats.files_unchanged + stats.files_indexed + len(stats.skipped) == 2010
    _same_index(tmp_path / "ray", reference)


def test_the_indexing_machine_reads_a_hub_model_without_its_weights(tiny_dirs, idefics3, tmp_path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`index --ray` chunks with the model's tokenizer where the files are: a hub model's config and tokenizer are
    fetched there, not its weights; and a cache holding only those is no model to load."""
    import huggingface_hub

    from freeret_tui.engine.models.hub import hub_snapshot
    from freeret_tui.engine.models.reader import model_facts
    from freeret_tui.errors import ModelLoadError

    asked: list[tuple[str, ...]] = []
    reader_only = tmp_path / "reader-only"
    reader_only.mkdir()
    for f in tiny_dirs["idefics3"].iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, reader_only / f.name)

    def snapshot_download(repo_id: str, allow_patterns: list[str], local_files_only: bool = False) -> str:
        asked.append(tuple(allow_patterns))
        return str(reader_only)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    facts = model_facts("someone/tiny-idefics3")
    assert (facts.name, facts.dim, facts.supports_images) == ("someone/tiny-idefics3", idefics3.dim, True)
    assert asked and all("*.safetensors" not in patterns for patterns in asked)
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):  # HF_HUB_OFFLINE=1 in tests
        hub_snapshot("someone/tiny-idefics3")
