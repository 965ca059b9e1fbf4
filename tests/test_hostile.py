"""Hostile files with the FakeModel (no torch): a photo broken or gone between the scan and the embedding, FIFOs,
devices and symbolic links out of the folder, a name that is not UTF-8 appearing while the daemon runs, and a
very long text. None crashes or hangs indexing; each is recorded with its reason; the rest is indexed."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_model import FakeModel

from freeret_tui.engine.chunking import chunk_text, word_spans
from freeret_tui.engine.daemon import DaemonLock
from freeret_tui.engine.indexer import index_files
from freeret_tui.engine.query import Filters, Query
from freeret_tui.engine.scan import walk
from freeret_tui.engine.session import Session, SessionConfig
from freeret_tui.engine.store import Store
from freeret_tui.engine.store.tx import DiskFullError
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
        latin = os.fsdecode(os.fsencode(folder) + b"/caf\xe9.txt")
        while {str(h.path) for h in session.search(Query("written after latin")).hits} != {str(folder / "after.txt"),
                                                                                            latin}:
            assert thread.is_alive(), "the daemon died"
            assert time.monotonic() < deadline, "the daemon stopped indexing"
            time.sleep(0.1)
    finally:
        daemon.stop.set()
        thread.join(10)


def test_a_name_that_is_not_utf8_is_indexed_found_and_shown_with_its_bytes(tmp_path: Path, capsys) -> None:
    from freeret_tui.cli import main

    folder = tmp_path / "archive"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9 menu.txt"  # Latin-1 "café menu.txt", as old archives hold
    with open(raw, "wb") as f:
        f.write(b"soupe du jour and a tarte tatin")
    session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False, mode="lexical"),
                      loader=lambda _c: FakeModel())
    session.load_model()
    stats, _ = session.index([folder])
    assert stats.files_indexed == 1 and not stats.skipped
    for words in ("tarte tatin", "café"):  # its text, and its name read as Latin-1
        hits = session.search(Query(words)).hits
        assert [os.fsencode(h.path) for h in hits] == [raw], words
        assert hits[0].title == "café menu.txt"
    assert session.search(Query("tarte"), Filters(folder="archive")).hits  # the folder filter reads its path too
    assert not session.search(Query("tarte"), Filters(folder="elsewhere")).hits
    stats, removed = session.index([folder])  # found again by its exact bytes: nothing to redo, nothing removed
    assert (stats.files_unchanged, stats.files_indexed, removed) == (1, 0, 0)
    assert main(["search", "tarte tatin", "--mode", "lexical", "--no-rerank"]) == 0
    assert "caf\\xe9 menu.txt" in capsys.readouterr().out
    os.unlink(raw)
    assert session.index([folder])[1] == 1
    assert not session.search(Query("tarte tatin")).hits


def _deeper_than_path_max(folder: Path) -> Path:
    """A folder chain whose full path is longer than PATH_MAX (4096), made step by step relative to its parent."""
    path, fd = folder, os.open(folder, os.O_RDONLY)
    try:
        while len(os.fsencode(path)) <= 4200:
            os.mkdir("d" * 200, dir_fd=fd)
            fd_next = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, path = fd_next, path / ("d" * 200)
        with os.fdopen(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as f:
            f.write("words nobody can open")
    finally:
        os.close(fd)
    return path


def test_every_file_found_is_accounted_for(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "kept.txt").write_text("an ordinary note")
    (folder / "gone.txt").symlink_to(folder / "deleted-long-ago.txt")
    deep = _deeper_than_path_max(folder)
    session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False), loader=lambda _c: FakeModel())
    session.load_model()
    for _ in range(2):  # and still there the next time: neither swept away nor counted twice
        session.index([folder])
        reasons = {Path(p).name: reason for p, reason in session.failures()}
        assert set(reasons) == {"gone.txt", deep.name}, reasons
        assert reasons["gone.txt"].startswith("symbolic link to a missing file")
        assert "PATH_MAX" in reasons[deep.name]
    counts = session.store.counts()
    assert (counts["indexed"], counts.get("skipped", 0) + counts.get("failed", 0)) == (1, 2)


def test_binary_data_in_a_text_file_is_refused_and_utf16_notes_are_read(tmp_path: Path) -> None:
    """A .txt of random bytes is skipped with its reason (decoded as Latin-1 it made 2,000 passages of noise and
    kept the model busy for many minutes); notes saved as UTF-16 or UTF-32 with a byte-order mark, as Windows
    editors write them, are read as text."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "noise.txt").write_bytes(random.Random(5).randbytes(200_000))
    (folder / "windows.txt").write_text("Grüße aus dem Garten: the shed needs a new roof.", encoding="utf-16")
    (folder / "wide.md").write_text("Lighthouse keeper's logbook, winter.", encoding="utf-32")
    session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False), loader=lambda _c: FakeModel())
    session.load_model()
    session.index([folder])
    assert {Path(p).name: r for p, r in session.failures()} == {"noise.txt": "binary data, not text (NUL bytes)"}
    assert session.store.counts()["failed"] == 1
    found = session.search(Query("Garten shed roof"), Filters()).hits
    assert found[0].path.name == "windows.txt" and found[0].text.startswith("Grüße aus dem Garten")
    assert session.search(Query("lighthouse logbook")).hits[0].path.name == "wide.md"
    assert session.store.item_count() == 2


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
    (directory / "daemon.lock").write_text("")
    (directory / "daemon.lock").chmod(0o644)  # as earlier versions left it
    lock = DaemonLock(directory)
    lock.acquire()
    lock.release()
    assert stat.S_IMODE((directory / "daemon.lock").stat().st_mode) == 0o600


HOSTILE_NAME = "evil\x1b]52;c;cHduZWQ=\x07\x1b[2J[@click=app.quit]x[b]\u202eatad.txt"
HOSTILE_TEXT = "lighthouse \x1b]0;pwned\x07 keeper \x1b[2J [red]not markup[/red]"


def _hostile_index(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / HOSTILE_NAME).write_text(HOSTILE_TEXT)
    (folder / "broken\x1b[2J[@click=app.quit]q[b].png").write_bytes(b"not a png")  # a recorded failure
    fd = os.open(os.fsencode(folder) + b"/caf\xe9 [x].txt", os.O_WRONLY | os.O_CREAT)  # empty: a recorded skip
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
            rows = " ".join(str(cell) for i in range(table.row_count) for cell in table.get_row_at(i))
            assert "broken\\x1b[2J[@click=app.quit]q[b].png" in rows and "caf\\xe9 [x].txt" in rows
            assert "\x1b" not in rows

    asyncio.run(scenario())
    assert copied and copied[0].endswith(HOSTILE_NAME)


def test_per_file_budgets_bound_what_one_file_can_cost(tmp_path: Path, photos: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The budgets, shrunk so small files exceed them (benchmarks/hostile_files.py measures the real bombs)."""
    import docx

    from freeret_tui.engine import extract as ex
    from freeret_tui.engine import office, pictures
    from freeret_tui.engine.types import Skip

    monkeypatch.setattr(pictures, "MAX_DECODED_PIXELS", 10_000)
    png = ex.extract(photos / "chelsea.png", word_spans)  # 451 x 300 PNG: decoded whole, so refused
    assert isinstance(png, Skip) and "over the 0 MP decoding budget" in png.reason
    assert not isinstance(ex.extract(photos / "rocket.jpg", word_spans), Skip)  # a JPEG decodes scaled down

    document = docx.Document()
    for n in range(5000):
        document.add_paragraph(f"paragraph {n}")
    document.save(tmp_path / "big.docx")
    monkeypatch.setattr(office, "MAX_XML_INFLATED", 65536)  # its body is read in pieces of 64 KiB: one piece
    cut = ex.extract(tmp_path / "big.docx", word_spans)
    assert not isinstance(cut, Skip) and cut[0].text.startswith("paragraph 0\nparagraph 1\n")
    assert not any("paragraph 4999" in chunk.text for chunk in cut)
    endless = docx.Document()
    endless.add_paragraph("bomb " * 40_000)  # one paragraph longer than the budget: never whole
    endless.save(tmp_path / "endless.docx")
    refused = ex.extract(tmp_path / "endless.docx", word_spans)
    assert isinstance(refused, Skip) and refused.reason == "DOCX has no whole paragraph in its first 0 MiB"

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


# -- a full disk -------------------------------------------------------------------------------------------------


@contextmanager
def _small_disk(where: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (a real filesystem that runs out of space); skipped where this
    user may not mount one."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
        for size in (4096, 512, 1):  # the last partial blocks too
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_rolls_the_batch_back_whole_and_says_so_in_one_line(tmp_path: Path) -> None:
    """SQLite's own limit on the database's pages gives the same SQLITE_FULL as a full disk, at a chosen moment."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, words in ((first, "alpha"), (second, "beta")):
        folder.mkdir()
        for i in range(5):
            (folder / f"{words}{i}.txt").write_text(f"{words} note {i} " + "filler words " * 4000)
    store = Store.in_dir(data_dir())
    model = FakeModel()
    index_files(store, model, list(walk([first])))
    before = store.counts()
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFullError) as raised:
        index_files(store, model, list(walk([second])))
    assert "is full: nothing of the last change was written" in str(raised.value)
    assert "\n" not in str(raised.value) and raised.value.__cause__ is None
    assert not store._db.in_transaction and store.counts() == before and store.lexical("beta", 5) == []
    assert [r[0] for r in store._db.execute("PRAGMA integrity_check")] == ["ok"]
    store._db.execute("PRAGMA max_page_count = 4294967294")  # space again: the same files go in
    assert index_files(store, model, list(walk([second]))).files_indexed == 5


def test_the_daemon_waits_on_a_full_disk_and_goes_on_when_space_is_back(tmp_path: Path, capsys,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from freeret_tui.cli import main

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "first.txt").write_text("the first note")
    with _small_disk(tmp_path / "disk") as disk:
        monkeypatch.setenv("FREERET_DATA_DIR", str(disk / "data"))
        session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False, mode="lexical"),
                          loader=lambda _c: FakeModel())
        session.load_model()
        session.index([folder])
        logged: list[str] = []
        daemon = session.daemon([folder], rescan_seconds=3600, log=logged.append)
        daemon.debounce, daemon.retry_seconds = 0.1, 0.2
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            filler = _fill(disk)
            for i in range(20):
                (folder / f"new{i}.txt").write_text(f"written while the disk is full {i} " + "words " * 2000)
            deadline = time.monotonic() + 30
            while not any("is full" in line for line in logged):
                assert thread.is_alive(), "the daemon died"
                assert time.monotonic() < deadline, logged
                time.sleep(0.1)
            time.sleep(1.0)  # several retries, each refused
            assert thread.is_alive() and sum("is full" in line for line in logged) == 1, logged
            assert main(["maintenance"]) == 1  # a command on the full disk: one line and what to do, no traceback
            said = capsys.readouterr().err
            assert said.startswith("freeret-tui: ") and "Traceback" not in said and "is full" in said.splitlines()[0]
            assert [r[0] for r in session.store._db.execute("PRAGMA integrity_check")] == ["ok"]
            filler.unlink()
            while session.store.counts().get("indexed") != 21:
                assert thread.is_alive(), "the daemon died"
                assert time.monotonic() < deadline + 30, logged
                time.sleep(0.1)
            assert any("space again" in line for line in logged)
        finally:
            daemon.stop.set()
            thread.join(10)
            daemon.store.close()
            session.store.close()


def test_the_daemon_log_on_a_full_disk_loses_lines_not_the_daemon(tmp_path: Path) -> None:
    """/dev/full refuses every write with ENOSPC, as a full disk does."""
    log = tmp_path / "daemon.log"
    script = ("import os, sys; from freeret_tui.daemon_cli import _log; _log('one'); _log('two'); "
              f"os.dup2(os.open({str(log)!r}, os.O_WRONLY | os.O_CREAT), 2); _log('three')")
    done = subprocess.run([sys.executable, "-c", script], stderr=open("/dev/full", "wb"), check=False)  # noqa: SIM115
    assert done.returncode == 0
    assert log.read_text().endswith(" three (2 earlier log lines were lost: the disk was full)\n")


def test_a_daemon_started_on_a_full_disk_waits_for_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first writes (the model's and the folders' records) meet the full disk: it waits like a daemon whose
    disk filled later, instead of dying before its loop."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "first.txt").write_text("the first note")
    with _small_disk(tmp_path / "disk") as disk:
        monkeypatch.setenv("FREERET_DATA_DIR", str(disk / "data"))
        session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False, mode="lexical"),
                          loader=lambda _c: FakeModel())
        session.load_model()
        logged: list[str] = []
        daemon = session.daemon([folder], rescan_seconds=3600, log=logged.append)
        daemon.debounce, daemon.retry_seconds = 0.1, 0.2
        filler = _fill(disk)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not any("is full" in line for line in logged):
                assert thread.is_alive(), "the daemon died"
                assert time.monotonic() < deadline, logged
                time.sleep(0.1)
            filler.unlink()
            while session.store.counts().get("indexed") != 1:
                assert thread.is_alive(), "the daemon died"
                assert time.monotonic() < deadline + 30, logged
                time.sleep(0.1)
        finally:
            daemon.stop.set()
            thread.join(10)
            daemon.store.close()
            session.store.close()
