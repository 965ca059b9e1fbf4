"""The engine and the TUI with the deterministic FakeModel: indexing, search in stages, fusion, filters, answers,
the daemon and TUI flows, with no torch at all (`python -m pytest -m "not torch"` runs these in a venv without it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from fake_model import ANSWER, FakeModel

from freeret_tui.cli import main
from freeret_tui.engine.indexer import IndexOptions
from freeret_tui.engine.query import Filters, Query, parse_query
from freeret_tui.engine.session import Session, SessionConfig
from freeret_tui.engine.types import Chunk, Kind
from freeret_tui.errors import UsageError
from freeret_tui.settings import data_dir, load_settings

NOTES = {
    "lighthouse.txt": "The lighthouse at the harbour guides the fishing boats at night.",
    "orchard.md": "# Orchard\nApples, pears and cider in the autumn orchard.",
    "ledger.txt": "Invoice ledger for March: three invoices paid in full.",
}


def _stamp(path: Path, day: date) -> None:
    ts = datetime.combine(day, datetime.min.time()).timestamp() + 3600
    os.utime(path, (ts, ts))


@pytest.fixture()
def library(tmp_path: Path, photos: Path) -> Path:
    """Notes in two folders with known dates, and two photos."""
    root = tmp_path / "library"
    (root / "Work").mkdir(parents=True)
    for name, text in NOTES.items():
        (root / ("Work" if name == "ledger.txt" else "") / name).write_text(text)
    (root / "Work" / "harbour-fees.txt").write_text("Harbour fees for the fishing boats, paid at the lighthouse.")
    shutil.copy(photos / "chelsea.png", root / "cat.png")
    shutil.copy(photos / "rocket.jpg", root / "Work" / "rocket.jpg")
    for path in root.rglob("*"):
        if path.is_file():
            _stamp(path, date(2024, 5, 10))
    _stamp(root / "Work" / "harbour-fees.txt", date(2024, 7, 1))
    return root


def _session(**config: object) -> Session:
    return Session(data_dir(), SessionConfig(model="fake-model", **config), loader=lambda _c: FakeModel())


def _names(hits: list) -> list[str]:
    return [h.path.name for h in hits]


def _found(session: Session, raw: str) -> list[str]:
    """The names of the files a query typed in the query box finds (filters included), sorted."""
    query, filters = parse_query(raw)
    return sorted(_names(session.search(query, filters).hits))


def test_index_then_search_in_stages_ranks_the_note_with_the_query_words(library: Path) -> None:
    session = _session(rerank=True, k=5, rerank_k=3)
    session.load_model()
    stats, removed = session.index([library])
    assert stats.files_indexed == 6 and not stats.skipped and removed == 0
    assert session.config.model == "fake-model" and session.store.model_name == "fake-model"

    result = session.search(Query("lighthouse harbour boats"))
    assert result.reranked and _names(result.hits)[0] in ("lighthouse.txt", "harbour-fees.txt")
    assert set(_names(result.hits)[:2]) == {"lighthouse.txt", "harbour-fees.txt"}
    probs = [h.rerank_prob for h in result.hits[:3]]
    assert all(p is not None for p in probs) and probs == sorted(probs, reverse=True)
    assert all(h.dense_score is not None for h in result.hits) and result.hits[0].lexical_score is not None
    assert not session.no_good_match(result.hits)
    # Words no file has: the rerank says so.
    assert session.no_good_match(session.search(Query("zebra unicorn")).hits)

    # Stage 2 step by step: each step the whole list, the reranked first.
    query = Query("apples cider")
    hits = session.candidates(query)
    steps = list(session.rerank_steps(query, hits))
    assert [len(s) for s in steps] == [len(hits)] * len(steps) and _names(steps[-1])[0] == "orchard.md"

    # Unchanged files are not embedded again; a deleted one leaves the index.
    (library / "orchard.md").unlink()
    stats, removed = session.index([library])
    assert stats.files_indexed == 0 and stats.files_unchanged == 5 and removed == 1
    assert "orchard.md" not in _names(session.search(Query("apples cider")).hits)


def test_filters_narrow_inside_the_index(library: Path) -> None:
    session = _session(rerank=False, k=10)
    session.load_model()
    session.index([library])

    def found(raw: str) -> list[str]:
        return _found(session, raw)

    assert found("lighthouse kind:image cat") == ["cat.png", "rocket.jpg"]
    assert found("harbour lighthouse in:work") == ["harbour-fees.txt", "ledger.txt", "rocket.jpg"]
    assert found("harbour lighthouse after:2024-06-01") == ["harbour-fees.txt"]
    assert "harbour-fees.txt" not in found("harbour lighthouse before:2024-06-01")
    assert found("harbour after:2024-05-10 before:2024-05-11 in:Work kind:text") == ["ledger.txt"]
    # The date shown for a hit is the one stored when it was indexed, not read from the disk again.
    hits = session.search(Query("lighthouse"), Filters(kinds=(Kind.TEXT,))).hits
    days = {h.path.name: date.fromtimestamp(h.dated) for h in hits if h.dated is not None}
    assert days["lighthouse.txt"] == date(2024, 5, 10) and days["harbour-fees.txt"] == date(2024, 7, 1)


def _photo_taken(path: Path, taken: str) -> None:
    """A photo whose EXIF says when it was taken (DateTimeOriginal)."""
    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = taken
    Image.new("RGB", (48, 32), "orange").save(path, exif=exif.tobytes())


def test_a_photo_is_dated_when_it_was_taken(library: Path, tmp_path: Path) -> None:
    """A copied photo's mtime is the copy's: the date shown and the date filters use its EXIF where it has one,
    also for a copy whose vectors are reused, and after a move; the rest keep their modification time."""
    _photo_taken(library / "beach.jpg", "2019:07:14 18:30:00")
    _stamp(library / "beach.jpg", date(2024, 5, 10))  # copied off the camera in 2024
    session = _session(rerank=False, k=10)
    session.load_model()
    session.index([library])

    def found(raw: str) -> list[str]:
        return _found(session, raw)

    # cat.png (the sample chelsea.png) has no EXIF block, but its XMP packet holds the camera's DateTimeOriginal.
    assert found("beach kind:image before:2020-01-01") == ["beach.jpg", "cat.png"]
    assert "beach.jpg" not in found("beach kind:image after:2024-01-01")
    assert found("cat kind:image after:2024-05-10 before:2024-05-11") == ["rocket.jpg"]  # no date but its mtime
    shutil.copy(library / "beach.jpg", library / "Work" / "beach-copy.jpg")  # same content: vectors reused
    (library / "beach.jpg").rename(library / "holiday.jpg")
    session.index([library])
    hits = session.search(Query("beach holiday"), Filters(kinds=(Kind.IMAGE,))).hits
    days = {p.name: date.fromtimestamp(h.dated) for h in hits for p in (h.path, *h.copies) if h.dated is not None}
    assert days["holiday.jpg"] == days["beach-copy.jpg"] == date(2019, 7, 14)
    assert days["rocket.jpg"] == date(2024, 5, 10)
    assert found("beach kind:image in:Work before:2020-01-01") == ["beach-copy.jpg"]  # the copy's own date


def test_identical_files_are_one_hit_that_names_its_copies(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A note and its backup, a photo in two albums: one hit each, at the best copy's place, naming the other; a
    folder filter still finds the copy in that folder. Passages stored without a content hash (an evaluation's)
    are never merged."""
    backup = library / "Backup"
    backup.mkdir()
    shutil.copy(library / "lighthouse.txt", backup / "lighthouse.txt")
    shutil.copy(library / "cat.png", backup / "cat-copy.png")
    session = _session(rerank=True, k=10, rerank_k=10)
    session.load_model()
    session.index([library])

    hits = session.search(Query("lighthouse harbour boats")).hits
    paths = [h.path for h in hits]
    assert len(paths) == len(set(paths)) == 6  # eight files, two of them copies
    notes = [h for h in hits if h.path.name == "lighthouse.txt"]
    assert len(notes) == 1 and {notes[0].path, *notes[0].copies} == {library / "lighthouse.txt",
                                                                       backup / "lighthouse.txt"}
    cats = [h for h in hits if h.path.name in ("cat.png", "cat-copy.png")]
    assert len(cats) == 1 and len(cats[0].copies) == 1
    assert all(not h.copies for h in hits if h not in notes + cats)
    in_backup = session.search(*parse_query("lighthouse in:Backup")).hits
    assert sorted(h.path.name for h in in_backup) == ["cat-copy.png", "lighthouse.txt"]
    assert all(h.path.parent == backup and not h.copies for h in in_backup)

    # The CLI, on words alone (it loads no model for them).
    assert main(["search", "lighthouse harbour boats", "--mode", "lexical", "--no-rerank", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["hits"]
    assert [len(h["copies"]) for h in shown if Path(h["path"]).name == "lighthouse.txt"] == [1]
    assert main(["search", "lighthouse harbour boats", "--mode", "lexical", "--no-rerank"]) == 0
    assert capsys.readouterr().out.count("      also at ") == 1

    store = session.store
    store.put_file(Path("/beir/a"), Path("/beir"), 0, 0.0, "", [Chunk(Path("/beir/a"), Kind.TEXT, "same words")],
                   np.ones((1, FakeModel().dim), dtype=np.float32))
    store.put_file(Path("/beir/b"), Path("/beir"), 0, 0.0, "", [Chunk(Path("/beir/b"), Kind.TEXT, "same words")],
                   np.ones((1, FakeModel().dim), dtype=np.float32))
    unhashed = session.search(Query("same words"), Filters(folder="beir")).hits
    assert sorted(h.path.name for h in unhashed) == ["a", "b"] and not any(h.copies for h in unhashed)


def test_one_long_file_does_not_fill_the_hits(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long file whose every passage matches gives at most ``per_file`` hits (2), and the other files come up in
    the freed places; its backup copy's passages neither (they are the same hits); ``per_file`` 0 lists every
    passage; a bad value is a usage error."""
    (library / "logbook.txt").write_text("\n\n".join(
        f"Day {n}: the lighthouse keeper trimmed the lamp and watched the harbour boats." for n in range(12)))
    (library / "Backup").mkdir()
    shutil.copy(library / "logbook.txt", library / "Backup" / "logbook.txt")  # its passages are the same hits
    index = IndexOptions(chunk_tokens=16, chunk_overlap=0)
    session = _session(rerank=False, k=10, index=index)
    session.load_model()
    session.index([library])
    hits = session.search(Query("lighthouse keeper harbour boats")).hits
    names = _names(hits)
    assert names.count("logbook.txt") == 2 and {"lighthouse.txt", "harbour-fees.txt"} <= set(names)
    assert [len(h.copies) for h in hits if h.path.name == "logbook.txt"] == [1, 1]
    every = _session(rerank=False, k=10, index=index, per_file=0)
    every.load_model()
    assert _names(every.search(Query("lighthouse keeper harbour boats")).hits).count("logbook.txt") > 2
    with pytest.raises(UsageError, match="per-file must be at least 0"):
        load_settings({"per_file": -1})
    monkeypatch.setenv("FREERET_PER_FILE", "0")
    assert load_settings().session_config().per_file == 0


def test_cli_search_takes_the_same_filters(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = _session()
    session.load_model()
    session.index([library])
    # Lexical search needs no model: the CLI answers from the index alone.
    code = main(["search", "harbour lighthouse in:Work before:2024-06-01", "--mode", "lexical", "--no-rerank",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["hits"] == []  # the harbour fees are from July; the lighthouse note is not in Work
    code = main(["search", "harbour lighthouse in:Work after:2024-06-01", "--mode", "lexical", "--no-rerank",
                 "--json"])
    [fees] = json.loads(capsys.readouterr().out)["hits"]
    assert code == 0 and Path(fees["path"]).name == "harbour-fees.txt" and fees["date"] == "2024-07-01T01:00:00"
    assert main(["search", "fees after:yesterday", "--mode", "lexical"]) == 2
    assert "dates are YYYY-MM-DD" in capsys.readouterr().err


def test_answer_streams_cites_and_stops(library: Path) -> None:
    session = _session()
    with pytest.raises(Exception, match="answers need the model"):
        list(session.answer("why?", [], threading.Event()))
    session.load_model()
    session.index([library])
    hits = session.search(Query("lighthouse")).hits
    chunks = list(session.answer("Where do the boats go?", hits, threading.Event()))
    assert "".join(c.text for c in chunks) == ANSWER and chunks[-1].done and chunks[-1].citations == (1,)
    stop = threading.Event()
    stop.set()
    stopped = list(session.answer("Where?", hits, stop))
    assert [c.text for c in stopped] == [""] and stopped[-1].citations == ()


def test_the_daemon_follows_new_and_deleted_files(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "first.txt").write_text("a first note about sailing")
    session = _session()
    session.load_model()
    daemon = session.daemon([folder], rescan_seconds=3600)
    daemon.debounce = 0.1
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()

    def wait(condition, what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        wait(lambda: session.status().counts["indexed"] == 1, "the first scan")
        (folder / "second.txt").write_text("kayaks on the lake at dawn")
        wait(lambda: _names(session.search(Query("kayaks")).hits)[:1] == ["second.txt"], "a new file")
        (folder / "first.txt").unlink()
        wait(lambda: session.status().counts["indexed"] == 1 and "first.txt" not in _names(
            session.search(Query("sailing")).hits), "a deleted file")
    finally:
        daemon.stop.set()
        thread.join(10)


def test_tui_search_rerank_ask_and_jump(tmp_path: Path, library: Path) -> None:
    from freeret_tui.tui.app import create_app
    from freeret_tui.tui.widgets import AnswerPane, ResultList

    settings = load_settings({"model": "fake-model", "rerank": True, "k": 5, "rerank_k": 3})
    app = create_app([library], settings, opener=lambda p: None, image_mode="halfcell",
                     loader=lambda _c: FakeModel())

    async def scenario() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: app.backend.model is not None
                           and app.backend.status().counts["indexed"] >= 6)
            await pilot.press(*"apples cider", "enter")
            screen = app.screen
            await wait_for(pilot, lambda: "reranked" in str(screen.query_one("#state").render()))
            assert screen.hits[0].hit.path.name == "orchard.md" and screen.hits[0].when == "2024-05-10"
            await pilot.press("a")
            answer = screen.query_one(AnswerPane)
            await wait_for(pilot, lambda: "cites" in str(answer.render()))
            assert "cites [1]" in str(answer.render())
            await pilot.press("j", "j", "1")  # the citation's number jumps back to hit 1
            assert screen.query_one(ResultList).highlighted == 0

    asyncio.run(scenario())


def test_a_first_start_indexes_the_newest_files_first(tmp_path: Path) -> None:
    """Over a library larger than one batch, the daemon's first batch is the newest files, from every folder,
    whatever order the scan found them in; a removal goes before them all."""
    rng = __import__("random").Random(5)
    stamps = list(range(200))
    rng.shuffle(stamps)
    for n, stamp in enumerate(stamps):
        path = tmp_path / f"folder{n % 3}" / f"note{n:03d}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"note number {n}")
        os.utime(path, (1_600_000_000 + stamp * 3600, 1_600_000_000 + stamp * 3600))
    roots = [tmp_path / f"folder{i}" for i in range(3)]
    session = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([roots[0]])  # indexed once already: then one of its files goes
    gone = sorted(roots[0].iterdir())[0]
    gone.unlink()
    daemon = session.daemon(roots, rescan_seconds=3600)
    daemon.rescan()
    order = [path for _root, path, _due in daemon.store.due(time.time(), 65)]
    assert order[0] == gone
    mtimes = [p.stat().st_mtime for p in order[1:]]
    assert mtimes == sorted(mtimes, reverse=True) and len(mtimes) == 64
    daemon.step()  # one batch of 64
    newest = sorted((p for r in roots for p in r.iterdir()), key=lambda p: p.stat().st_mtime)[-64:]
    indexed = {Path(p) for p, (_sha, status) in daemon.store.file_hashes().items() if status == "indexed"}
    assert set(newest) <= indexed and session.store.file_row(gone) is None
