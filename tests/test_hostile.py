"""Hostile files with the FakeModel (no torch): a photo broken or gone between the scan and the embedding, FIFOs,
devices and symbolic links out of the folder, a name that is not UTF-8 appearing while the daemon runs, and a
very long text. None crashes or hangs indexing; each is recorded with its reason; the rest is indexed."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest

from fake_model import FakeModel
from freeret_tui.engine.chunking import chunk_text, word_spans
from freeret_tui.engine.indexer import index_files
from freeret_tui.engine.query import Query
from freeret_tui.engine.scan import walk
from freeret_tui.engine.session import Session, SessionConfig
from freeret_tui.engine.store import Store
from freeret_tui.settings import data_dir


def _index_in_time(store: Store, model: FakeModel, folder: Path, seconds: float = 60.0):
    """index_files in a thread: a hang fails the test instead of stalling the suite."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(index_files(store, model, list(walk([folder])))),
                              daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "indexing hung"
    assert result, "indexing raised (see the thread's traceback above)"
    return result[0]


def test_photos_broken_or_gone_before_embedding_fail_alone(tmp_path: Path, photos: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "note.txt").write_text("a note that must still be indexed")
    for name, photo in (("gone.png", "chelsea.png"), ("cut.png", "coffee.png"), ("fine.png", "horse.png")):
        shutil.copy(photos / photo, folder / name)
    model = FakeModel()

    def break_files() -> None:  # after the scan decoded them, before the model reads them again
        if (folder / "gone.png").exists():
            (folder / "gone.png").unlink()
            data = (folder / "cut.png").read_bytes()
            (folder / "cut.png").write_bytes(data[: len(data) // 3])

    model.before_embed.append(break_files)
    store = Store(tmp_path / "index.db")
    stats = _index_in_time(store, model, folder)
    reasons = {s.path.name: s.reason for s in stats.skipped}
    assert set(reasons) == {"gone.png", "cut.png"}
    assert "FileNotFoundError" in reasons["gone.png"] and "truncated" in reasons["cut.png"]
    assert all(r.startswith("cannot read it to embed") for r in reasons.values())
    assert stats.files_indexed == 2  # the note and the intact photo, in the same batch
    assert {Path(p).name for p, _ in store.skips()} == {"gone.png", "cut.png"}


def test_a_failure_no_file_explains_is_raised(tmp_path: Path) -> None:
    """The guard is not a blanket: a model error with every file readable still surfaces."""
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "note.txt").write_text("plain text")
    model = FakeModel()

    def model_fault() -> None:
        raise RuntimeError("the model broke")

    model.before_embed.append(model_fault)
    with pytest.raises(RuntimeError, match="the model broke"):
        index_files(Store(tmp_path / "index.db"), model, list(walk([folder])))


def test_fifos_devices_and_links_out_of_the_folder_are_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "note.txt").write_text("the one real note")
    os.mkfifo(folder / "pipe.txt")  # opening it would block until a writer comes
    (folder / "zero.txt").symlink_to("/dev/zero")  # reading it would never end
    outside = tmp_path / "secret.txt"
    outside.write_text("private words from outside the folder")
    (folder / "secret-link.txt").symlink_to(outside)
    (folder / "inside-link.txt").symlink_to(folder / "note.txt")  # a link within the folder is followed
    store = Store(tmp_path / "index.db")
    stats = _index_in_time(store, FakeModel(), folder)
    reasons = {s.path.name: s.reason for s in stats.skipped}
    assert reasons["pipe.txt"].startswith("not a regular file") and reasons["zero.txt"].startswith("not a regular")
    assert reasons["secret-link.txt"].startswith("symbolic link to a file outside")
    assert stats.files_indexed == 2 and store.lexical("private", 5) == []


def test_a_name_that_is_not_utf8_does_not_stop_the_daemon(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    session = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    daemon = session.daemon([folder], rescan_seconds=3600)
    daemon.debounce = 0.1
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        fd = os.open(os.fsencode(folder) + b"/caf\xe9.txt", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"latin-1 name")
        os.close(fd)
        time.sleep(1.0)
        (folder / "after.txt").write_text("written after the bad name")
        deadline = time.monotonic() + 30
        while [h.path.name for h in session.search(Query("written after")).hits][:1] != ["after.txt"]:
            assert thread.is_alive(), "the daemon died"
            assert time.monotonic() < deadline, "the daemon stopped indexing"
            time.sleep(0.1)
    finally:
        daemon.stop.set()
        thread.join(10)


def test_chunk_lines_match_a_plain_count_on_long_text() -> None:
    rng = random.Random(3)
    text = "".join(rng.choice(["word ", "longer-word ", "\n", "\n\n", "x "]) for _ in range(20_000))
    for window in chunk_text(text, word_spans, 64, 8):
        assert window.line_start == text.count("\n", 0, window.start) + 1
        assert window.line_end == text.count("\n", 0, window.end) + 1
