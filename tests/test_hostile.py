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
    (folder / "environ.txt").symlink_to("/proc/self/environ")  # the indexer's own environment
    (folder / "hostname.txt").symlink_to("/etc/hostname")
    store = Store(tmp_path / "index.db")
    stats = _index_in_time(store, FakeModel(), folder)
    reasons = {s.path.name: s.reason for s in stats.skipped}
    assert reasons["pipe.txt"].startswith("not a regular file") and reasons["zero.txt"].startswith("not a regular")
    for link in ("secret-link.txt", "environ.txt", "hostname.txt"):
        assert reasons[link].startswith("symbolic link to a file outside"), link
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


def test_the_index_is_private_by_default(tmp_path: Path) -> None:
    import stat

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("private words")
    directory = data_dir()
    directory.chmod(0o755)  # as earlier versions left it
    directory = data_dir()
    session = Session(directory, SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([folder])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name


HOSTILE_NAME = "evil\x1b]52;c;cHduZWQ=\x07\x1b[2J[@click=app.quit]x[b]\u202eatad.txt"
HOSTILE_TEXT = "lighthouse \x1b]0;pwned\x07 keeper \x1b[2J [red]not markup[/red]"


def _hostile_index(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / HOSTILE_NAME).write_text(HOSTILE_TEXT)
    (folder / "broken\x1b[2J[@click=app.quit]q[b].png").write_bytes(b"not a png")  # a recorded failure
    fd = os.open(os.fsencode(folder) + b"/caf\xe9 [x].txt", os.O_WRONLY | os.O_CREAT)  # reported, never stored
    os.close(fd)
    session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([folder])
    return folder


def test_the_cli_prints_hostile_names_and_contents_as_plain_text(tmp_path: Path, capsys) -> None:
    from freeret_tui.cli import main

    _hostile_index(tmp_path)
    assert main(["search", "lighthouse keeper", "--mode", "lexical", "--no-rerank"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "evil\\x1b]52;c;cHduZWQ=\\x07" in out and "\\u202eatad.txt" in out and "[red]not markup[/red]" in out
    assert main(["daemon", "status"]) == 0
    assert "\x1b" not in capsys.readouterr().out
    assert main(["search", "x", "--image", str(tmp_path / "no\x1b[2Jsuch.png")]) == 2
    assert "\x1b" not in capsys.readouterr().err


def test_the_tui_shows_hostile_names_as_text_in_the_list_preview_failures_and_toasts(tmp_path: Path) -> None:
    import asyncio

    from freeret_tui.settings import load_settings
    from freeret_tui.tui.app import create_app
    from freeret_tui.tui.screens import FailuresScreen

    folder = _hostile_index(tmp_path)
    copied: list[str] = []
    app = create_app([folder], load_settings({"mode": "lexical", "rerank": False}), opener=lambda p: None,
                     image_mode="halfcell", start_daemon=False)

    async def scenario() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            app.copy_to_clipboard = copied.append  # the path the person asked for, as it is
            await pilot.press(*"lighthouse keeper", "enter")
            screen = app.screen
            while not screen.hits:
                await pilot.pause(0.05)
            shown = str(screen.query_one("#results").render_line(0)) + str(screen.query_one("#preview-body").render())
            head = str(screen.query_one("#preview-head").render())
            assert "\x1b" not in shown + head and "\\x1b" in head and "[red]not markup[/red]" in shown
            await pilot.press("y")  # a toast naming the file: no markup error, no escape
            await pilot.press("F")
            assert isinstance(app.screen, FailuresScreen)
            table = app.screen.query_one("#failures")
            await pilot.pause(0.1)
            row = " ".join(str(cell) for cell in table.get_row_at(0))
            assert "broken\\x1b[2J[@click=app.quit]q[b].png" in row and "\x1b" not in row

    asyncio.run(scenario())
    assert copied and copied[0].endswith(HOSTILE_NAME)


def test_per_file_budgets_bound_what_one_file_can_cost(tmp_path: Path, photos: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The budgets, shrunk so small files exceed them (benchmarks/hostile_files.py measures the real bombs)."""
    import docx

    from freeret_tui.engine import extract as ex
    from freeret_tui.engine.types import Skip

    monkeypatch.setattr(ex, "MAX_DECODED_PIXELS", 10_000)
    png = ex.extract(photos / "chelsea.png", word_spans)  # 451 x 300 PNG: decoded whole, so refused
    assert isinstance(png, Skip) and "over the 0 MP decoding budget" in png.reason
    assert not isinstance(ex.extract(photos / "rocket.jpg", word_spans), Skip)  # a JPEG decodes scaled down

    document = docx.Document()
    document.add_paragraph("words " * 2000)
    document.save(tmp_path / "big.docx")
    monkeypatch.setattr(ex, "MAX_DOCX_INFLATED", 4096)
    refused = ex.extract(tmp_path / "big.docx", word_spans)
    assert isinstance(refused, Skip) and "over the 0 MiB budget" in refused.reason

    (tmp_path / "long.txt").write_text("é" * 600 + " tail-word-beyond-the-budget", encoding="utf-8")
    monkeypatch.setattr(ex, "MAX_TEXT_BYTES", 1001)  # cuts the 501st "é" in half: still read as UTF-8
    chunks = ex.extract(tmp_path / "long.txt", word_spans)
    assert not isinstance(chunks, Skip) and chunks[0].text == "é" * 500

    (tmp_path / "many.txt").write_text(" ".join(f"w{i}" for i in range(1000)))
    monkeypatch.setattr(ex, "MAX_ITEMS_PER_FILE", 3)
    assert len(ex.extract(tmp_path / "many.txt", word_spans, 10, 2)) == 3

    monkeypatch.setattr(ex, "MAX_TEXT_BYTES", 1 << 20)
    (tmp_path / "blank.txt").write_text("\n" * 5000 + "one word\n" + "\n" * 5000)
    blank = ex.extract(tmp_path / "blank.txt", lambda t: [(i, i + 1) for i in range(len(t))], 16, 2)
    assert [c.text.strip() for c in blank] and all(c.text.strip() for c in blank)


def test_a_damaged_index_is_reported_with_the_way_out(tmp_path: Path, capsys) -> None:
    from freeret_tui.cli import main

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("kept words")
    session = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([folder])
    session.store.close()
    index = data_dir() / "index.db"
    with index.open("r+b") as f:  # the header overwritten, as a bad sector or a stray write would
        f.write(b"\xff" * 100)
    for path in (index.with_name("index.db-wal"), index.with_name("index.db-shm")):
        path.unlink(missing_ok=True)

    for argv in (["search", "kept", "--mode", "lexical"], ["daemon", "status"], [str(folder), "--no-daemon"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "is damaged" in err and "mv " in err and "Traceback" not in err, argv
    # Following the advice works: the damaged file moved aside, a new index is built from the files.
    index.rename(index.with_name("index.db.damaged"))
    session = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([folder])
    assert [h.path.name for h in session.search(Query("kept")).hits] == ["a.txt"]


def test_maintenance_reports_a_damaged_index_as_text(tmp_path: Path, capsys) -> None:
    from freeret_tui.cli import main

    folder = tmp_path / "notes"
    folder.mkdir()
    for n in range(40):
        (folder / f"n{n}.txt").write_text(f"note number {n} " * 50)
    session = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([folder])
    assert main(["maintenance"]) == 0  # also checkpoints the WAL into the file
    capsys.readouterr()
    session.store.close()
    index = data_dir() / "index.db"
    with index.open("r+b") as f:  # 64 KB overwritten mid-file
        f.seek(2 * 65536)
        f.write(os.urandom(65536))
    assert main(["maintenance"]) == 1
    out, err = capsys.readouterr()
    assert "damaged" in out + err and "Traceback" not in out + err


def test_the_daemon_stops_and_says_so_when_its_index_is_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("words")
    session = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    said: list[str] = []
    daemon = session.daemon([folder], rescan_seconds=3600, log=said.append)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while session.status().counts.get("indexed", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        (data_dir() / name).unlink(missing_ok=True)
    thread.join(30)
    assert not thread.is_alive(), "the daemon kept writing to a deleted file"
    assert any("was deleted or replaced: stopping" in line for line in said)


def test_every_file_not_indexed_is_listed_paged(tmp_path: Path, capsys) -> None:
    import asyncio
    import json

    from freeret_tui.cli import main
    from freeret_tui.settings import load_settings
    from freeret_tui.tui.app import create_app
    from freeret_tui.tui.screens import FailuresScreen

    folder = tmp_path / "broken"
    folder.mkdir()
    for n in range(250):
        (folder / f"b{n:03}.jpg").write_bytes(b"not a photo")
    session = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([folder])

    assert main(["daemon", "status"]) == 0
    assert "… 240 more: `freeret-tui daemon status --json --page 1`" in capsys.readouterr().out
    pages = []
    for page in (1, 2, 3):
        assert main(["daemon", "status", "--json", "--page", str(page)]) == 0
        pages.append(json.loads(capsys.readouterr().out)["not_indexed"])
    assert [len(p["files"]) for p in pages] == [200, 50, 0] and pages[0]["total"] == 250 and pages[0]["pages"] == 2
    assert len({f["path"] for p in pages for f in p["files"]}) == 250

    app = create_app([folder], load_settings({"mode": "lexical", "rerank": False}), opener=lambda p: None,
                     image_mode="halfcell", start_daemon=False)

    async def scenario() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("tab", "F")  # out of the query box, then the failures list
            assert isinstance(app.screen, FailuresScreen)
            assert app.screen.query_one("#failures").row_count == 250

    asyncio.run(scenario())
