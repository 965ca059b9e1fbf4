"""Indexing shares the model: it embeds in short calls, the model goes to whoever asked first, progress comes after
each call, and a pause or a stop of the daemon takes effect between calls (torch-free: FakeModel)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fake_model import FakeModel

from freeret_tui.engine.daemon import Daemon
from freeret_tui.engine.indexer import IndexOptions, index_files
from freeret_tui.engine.models.turns import Turns
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Content, Kind
from freeret_tui.settings import data_dir


class SlowModel(FakeModel):
    """FakeModel taking ``per_item`` seconds an item, one call at a time, recording each call's size."""

    def __init__(self, per_item: float) -> None:
        super().__init__()
        self.per_item = per_item
        self.calls: list[int] = []
        self.turns = Turns()

    def embed(self, items: Sequence[Content], side: Side, kinds: Sequence[Kind] | None = None,
              *args: object) -> np.ndarray:
        with self.turns:
            self.calls.append(len(items))
            time.sleep(self.per_item * len(items))
            return super().embed(items, side, kinds)


def long_note(folder: Path, words: int = 600) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "long.txt"
    path.write_text(" ".join(f"word{n}" for n in range(words)))
    return path


def test_the_model_goes_to_whoever_asked_first() -> None:
    """A thread that asks while another holds the model gets it next, even when the holder asks again at once
    (threading.Lock gave it back to the holder: red with it)."""
    turns, order = Turns(), []
    first_holds, second_waits = threading.Event(), threading.Event()

    def holder() -> None:
        with turns:
            first_holds.set()
            second_waits.wait(5)
            time.sleep(0.05)  # the other thread is inside __enter__, waiting
            order.append("holder, first call")
        with turns:  # asked again at once, as the indexer's next call
            order.append("holder, second call")

    def searcher() -> None:
        first_holds.wait(5)
        second_waits.set()
        with turns:
            order.append("search")

    threads = [threading.Thread(target=holder), threading.Thread(target=searcher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["holder, first call", "search", "holder, second call"]


def test_a_long_file_is_embedded_in_calls_of_about_call_seconds_with_progress_after_each(tmp_path: Path) -> None:
    model = SlowModel(per_item=0.01)
    path = long_note(tmp_path / "notes")
    store = Store(data_dir() / "index.db")
    seen: list[tuple[int, int, int]] = []
    options = IndexOptions(chunk_tokens=16, chunk_overlap=0, call_seconds=0.035)
    stats = index_files(store, model, [(path.parent, path)], options, lambda *p: seen.append(p))
    assert stats.items_added == 38 == sum(model.calls)  # 600 words, 16 a passage
    # The first call is one of the model's batches (nothing timed yet: 4 items); then each fits 0.035 s at >= 0.01 s
    # an item: 3 at most.
    assert model.calls[0] == model.batch_size == 4 and max(model.calls[1:]) <= 3 and len(model.calls) >= 13
    # Progress after every call (items counting up, the file not yet done), then after the commit (the file done).
    during = [items for done, _, items in seen if done == 0]
    assert during == list(np.cumsum(model.calls)) and seen[len(during):] and set(seen[len(during):]) == {(1, 1, 38)}


def test_the_default_pace_keeps_a_fast_models_calls_large(tmp_path: Path) -> None:
    """A model that is quick per item gets calls of up to ``flush_items`` after its first, as before the pace."""
    model = SlowModel(per_item=0.0)
    path = long_note(tmp_path / "notes", words=2000)
    index_files(Store(data_dir() / "index.db"), model, [(path.parent, path)],
                IndexOptions(chunk_tokens=16, chunk_overlap=0, flush_items=64))
    assert model.calls[0] == 4 and max(model.calls) == 64


def _daemon_embedding(tmp_path: Path, model: SlowModel) -> tuple[Daemon, threading.Thread, Store]:
    """A daemon thread over a folder with one long note, returned once it has made its first model calls."""
    folder = tmp_path / "notes"
    long_note(folder, words=2000)
    directory = data_dir()
    options = IndexOptions(chunk_tokens=16, chunk_overlap=0, call_seconds=0.05)
    daemon = Daemon(Store(directory / "index.db"), model, [folder], directory, options, debounce=0.05,
                    rescan_seconds=3600)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while len(model.calls) < 3:
        assert time.monotonic() < deadline, "the daemon never called the model"
        time.sleep(0.01)
    return daemon, thread, Store(directory / "index.db")


def test_stopping_the_daemon_mid_file_waits_for_one_call_and_keeps_the_file_queued(tmp_path: Path) -> None:
    """Before, a stop waited for the whole file's one call (what quitting the TUI waits for)."""
    model = SlowModel(per_item=0.01)  # 125 passages: 1.25 s of model time, in calls of about 0.05 s
    daemon, thread, reader = _daemon_embedding(tmp_path, model)
    daemon.stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert sum(model.calls) < 125  # stopped between calls, not at the file's end
    assert reader.counts().get("items", 0) == 0 and reader.queue_length() == 1  # nothing half-written; still due
    reader.close()


def test_a_paused_daemon_makes_no_model_call_until_resumed(tmp_path: Path) -> None:
    model = SlowModel(per_item=0.01)
    daemon, thread, reader = _daemon_embedding(tmp_path, model)
    try:
        daemon.paused.set()
        time.sleep(0.5)  # a call that began before the pause (0.05 s) has ended
        calls = len(model.calls)
        time.sleep(0.3)
        assert len(model.calls) == calls and sum(model.calls) < 125  # held between calls while paused, mid-file
        daemon.paused.clear()
        deadline = time.monotonic() + 30
        while reader.counts().get("indexed", 0) < 1:
            assert time.monotonic() < deadline, "indexing did not go on after the pause"
            time.sleep(0.02)
        assert reader.counts()["items"] == 125 == sum(model.calls)  # every passage embedded and stored once
    finally:
        daemon.stop.set()
        thread.join(30)
        reader.close()
