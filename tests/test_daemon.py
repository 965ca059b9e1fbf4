"""The watching daemon with the tiny random VLM: it converges to the filesystem, survives SIGKILL, keeps offline
roots, refuses a second instance, scans soon after the kernel drops events, and lets a reader search while it
writes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import churn
from freeret_tui.cli import main
from freeret_tui.engine import daemon as daemon_module
from freeret_tui.engine.daemon import Daemon, DaemonLock, DaemonRunning, holder_pid, read_status
from freeret_tui.engine.store import Store
from freeret_tui.settings import data_dir


@pytest.fixture()
def roots(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "notes", tmp_path / "more"
    (a / "trip").mkdir(parents=True)
    b.mkdir()
    (a / "harbour.txt").write_text("The lighthouse at the harbour guides boats at night.\n")
    (a / "trip" / "orchard.md").write_text("# Orchard\nApples and cider in autumn.\n")
    (b / "ledger.txt").write_text("Invoice ledger for March: paid in full.\n")
    return [a, b]


@pytest.fixture()
def running(roots: list[Path], idefics3) -> Iterator[tuple[Daemon, Store]]:
    """An in-process daemon thread (as the TUI runs it) and a second connection to read what it wrote."""
    directory = data_dir()
    daemon = Daemon(Store(directory / "index.db"), idefics3, roots, directory, debounce=0.2, rescan_seconds=3600)
    ready = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set}, daemon=True)
    thread.start()
    assert ready.wait(60), "initial scan did not finish"
    reader = Store(directory / "index.db")
    yield daemon, reader
    daemon.stop.set()
    thread.join(30)
    assert not thread.is_alive()
    reader.close()


def converged(reader: Store, roots: list[Path]) -> churn.Report:
    report = churn.wait_converged(reader, roots, timeout=30)
    assert report.clean, report
    return report


def test_daemon_follows_every_kind_of_change(running: tuple[Daemon, Store], roots: list[Path], photos: Path) -> None:
    daemon, reader = running
    a, b = roots
    converged(reader, roots)
    assert reader.embedded_items == 3

    (a / "comet.txt").write_text("A comet crossed the nebula.\n")  # create
    shutil.copy(photos / "chelsea.png", b / "cat.png")  # an image
    (b / "ledger.txt").write_text("Invoice ledger for April: two payments due.\n")  # modify
    converged(reader, roots)
    embedded = reader.embedded_items
    assert embedded == 6

    (a / "harbour.txt").rename(a / "lighthouse.txt")  # rename
    os.replace(a / "trip" / "orchard.md", b / "orchard.md")  # move across roots
    (a / "trip").rename(a / "journeys")  # a folder moves
    (a / "comet.txt").unlink()  # delete
    temp = b / ".ledger.txt.swp"  # editor save: temp file renamed over the original
    temp.write_text("Invoice ledger for April: settled.\n")
    os.replace(temp, b / "ledger.txt")
    converged(reader, roots)
    assert reader.embedded_items == embedded + 1, "only the edited ledger is new content"

    hits = reader.lexical("lighthouse harbour", 3)
    assert hits and reader.items([hits[0][0]])[hits[0][0]].chunk.path == a / "lighthouse.txt"

    (a / "copy.txt").write_text((a / "lighthouse.txt").read_text())  # a duplicate: reused, not embedded
    (a / "lighthouse.txt").touch()  # new mtime, same content
    converged(reader, roots)
    assert reader.embedded_items == embedded + 1
    assert read_status(reader, data_dir()).counts["indexed"] == 5


def test_status_reports_roots_counts_and_errors(running: tuple[Daemon, Store], roots: list[Path], capsys) -> None:
    _daemon, reader = running
    (roots[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    broken = str(roots[0] / "broken.png")
    deadline = time.monotonic() + 30
    while (reader.file_hashes().get(broken, (None, ""))[1] != "failed" or reader.queue_length()) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert churn.compare(reader, roots).lost == [broken]  # recorded as failed, not indexed
    assert main(["daemon", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {r["path"] for r in status["roots"]} == {str(r) for r in roots}
    assert status["counts"]["indexed"] == 3 and status["counts"]["failed"] == 1 and status["counts"]["queued"] == 0
    assert status["last_errors"][0]["path"].endswith("broken.png")
    assert "cannot decode" in status["last_errors"][0]["reason"]


def test_one_daemon_per_data_dir_and_a_private_lock() -> None:
    directory = data_dir()
    first = DaemonLock(directory)
    first.acquire()
    try:
        assert stat.S_IMODE((directory / "daemon.lock").stat().st_mode) == 0o600
        assert holder_pid(directory) == os.getpid()
        with pytest.raises(DaemonRunning, match=str(os.getpid())):
            DaemonLock(directory).acquire()
    finally:
        first.release()
    assert holder_pid(directory) is None


def test_an_unmounted_root_is_kept_offline(roots: list[Path], idefics3) -> None:
    directory = data_dir()
    store = Store(directory / "index.db")
    daemon = Daemon(store, idefics3, roots, directory, debounce=0.0)
    daemon.rescan()
    while daemon.step():
        pass
    assert len(store.file_hashes()) == 3
    unplugged = roots[1].with_name("unplugged")
    roots[1].rename(unplugged)  # the drive goes away
    daemon.rescan()
    while daemon.step():
        pass
    assert str(roots[1] / "ledger.txt") in store.file_hashes(), "entries of an offline root are kept"
    assert dict((str(p), online) for p, online, _ in store.roots())[str(roots[1])] is False
    unplugged.rename(roots[1])  # and comes back, with a change made elsewhere meanwhile
    (roots[1] / "new.txt").write_text("Barley and a tractor in the field.\n")
    daemon.rescan()
    while daemon.step():
        pass
    assert churn.compare(store, roots).clean
    daemon.stop.set()


def test_churn_and_kill_loses_nothing_and_embeds_nothing_twice(tmp_path: Path, tiny_dirs: dict[str, Path],
                                                              roots: list[Path]) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = churn.churn_and_kill(tiny_dirs["idefics3"], roots, env, tmp_path / "daemon.log", kills=3,
                                  ops_per_round=15, seed=7)
    assert result["lost"] == [] and result["ghosts"] == [] and result["queued"] == 0, result
    # Every content present is embedded, and no content was embedded twice (one chunk per file here).
    assert result["distinct_contents_present"] <= result["embedded_items"] <= result["distinct_contents_written"] + 3


def test_a_reader_process_searches_while_the_daemon_writes(tmp_path: Path, tiny_dirs: dict[str, Path],
                                                           roots: list[Path]) -> None:
    env = dict(os.environ)
    log = tmp_path / "daemon.log"
    child = churn.start_daemon(tiny_dirs["idefics3"], roots, env, log)
    reader_code = (
        "import sys, time\n"
        "from freeret_tui.engine.store import Store\n"
        "s = Store(sys.argv[1]); end = time.time() + 8; n = 0\n"
        "while time.time() < end:\n"
        "    s.lexical('ledger note harbour', 10); s.counts(); n += 1\n"
        "print(n)\n"
    )
    try:
        reader = subprocess.Popen([sys.executable, "-c", reader_code, str(data_dir() / "index.db")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(150):  # writes while the reader reads
            (roots[n % 2] / f"burst{n}.txt").write_text(f"note {n} about the harbour ledger\n")
            time.sleep(0.03)
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        assert int(out) > 10 and err == ""
        store = Store(data_dir() / "index.db")
        assert churn.wait_converged(store, roots, 60).clean
    finally:
        child.terminate()
        child.wait(60)
    assert holder_pid(data_dir()) is None, "SIGTERM releases the lock"


def test_daemon_start_search_stop_from_the_cli(roots: list[Path], tiny_dirs: dict[str, Path], capsys) -> None:
    model = ["--model", str(tiny_dirs["idefics3"]), "--dtype", "float32", "--device", "cpu"]
    assert main(["daemon", "start", *map(str, roots), *model, "--nice", "0"]) == 0
    assert "daemon started" in capsys.readouterr().out
    try:
        assert main(["daemon", "start", *map(str, roots), *model]) == 1  # one per data dir
        assert "already running" in capsys.readouterr().err
        (roots[1] / "kestrel.txt").write_text("A kestrel hovered over the quarry at dawn.\n")
        reader = Store(data_dir() / "index.db")
        assert churn.wait_converged(reader, roots, 60).clean
        assert main(["search", "kestrel quarry", "--mode", "lexical", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)["hits"]
        assert hits[0]["path"] == str(roots[1] / "kestrel.txt")
        assert main(["daemon", "status"]) == 0
        assert "running (pid" in capsys.readouterr().out
        for name in ("daemon.log", "daemon.lock"):  # private, like the index: the log names files and folders
            assert stat.S_IMODE((data_dir() / name).stat().st_mode) == 0o600, name
    finally:
        assert main(["daemon", "stop"]) == 0
    assert "daemon stopped" in capsys.readouterr().out
    assert main(["daemon", "stop"]) == 0 and "no daemon" in capsys.readouterr().out
    assert "initial scan done" in (data_dir() / "daemon.log").read_text()


@pytest.mark.parametrize("argv, message", [
    (["daemon", "start", "/no/such/folder"], "not a folder"),
    (["daemon", "start"], "no folders to watch"),
    (["daemon", "run", ".", "--nice", "-5"], "--nice must be"),
    (["daemon", "jump"], "invalid choice"),
])
def test_daemon_usage_errors_are_one_line(argv: list[str], message: str, capsys) -> None:
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_excluded_folders_come_from_the_config(roots: list[Path], idefics3) -> None:
    from freeret_tui.settings import load_settings

    (data_dir() / "config.toml").write_text('exclude = ["drafts", "node_modules"]\n')
    settings = load_settings()
    assert settings.exclude == ("drafts", "node_modules")
    (roots[0] / "drafts").mkdir()
    (roots[0] / "drafts" / "wip.txt").write_text("An unfinished draft about kelp.\n")
    store = Store(data_dir() / "index.db")
    daemon = Daemon(store, idefics3, roots, data_dir(), settings.index_options(), debounce=0.0)
    daemon.rescan()
    while daemon.step():
        pass
    assert len(store.file_hashes()) == 3 and not any("drafts" in p for p in store.file_hashes())


def test_an_inotify_overflow_brings_the_next_scan_forward(roots: list[Path], idefics3, monkeypatch) -> None:
    """watchdog reports a kernel queue overflow only in its log; the daemon then scans soon (not at the next
    periodic scan), which finds the changes whose events were lost."""
    monkeypatch.setattr(daemon_module, "OVERFLOW_RESCAN_SECONDS", 0.2)
    directory = data_dir()
    daemon = Daemon(Store(directory / "index.db"), idefics3, roots, directory, debounce=0.2, rescan_seconds=3600)
    ready = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set}, daemon=True)
    thread.start()
    assert ready.wait(60), "initial scan did not finish"
    reader = Store(directory / "index.db")
    try:
        monkeypatch.setattr(daemon._inbox, "add", lambda *args, **kwargs: None)  # the events that get lost
        lost = roots[1] / "lost.txt"
        lost.write_text("Written while the kernel's event queue was full.\n")
        time.sleep(1.0)
        assert reader.file_row(lost) is None
        logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
        deadline = time.time() + 30
        while reader.file_row(lost) is None and time.time() < deadline:
            time.sleep(0.2)
        assert reader.file_row(lost) is not None
    finally:
        daemon.stop.set()
        thread.join(30)
        reader.close()
    assert daemon._alarm not in logging.getLogger("watchdog").handlers  # let go when the daemon stops


def test_a_served_model_gone_pauses_the_daemon_and_loses_nothing(tmp_path: Path) -> None:
    """serve:URL down mid-batch: nothing of the batch is written, its files stay queued, and the daemon goes on
    when the server answers again."""
    from fake_model import FakeModel

    from freeret_tui.engine.session import Session, SessionConfig
    from freeret_tui.errors import ModelUnavailableError

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "first.txt").write_text("the first note")
    model = FakeModel()
    embed = model.embed
    server_up = threading.Event()
    server_up.set()

    def served(items, side, *args, **kwargs):
        if not server_up.is_set():
            raise ModelUnavailableError("the model server at http://gpu-box:8000/freeret is unreachable")
        return embed(items, side, *args, **kwargs)

    model.embed = served
    session = Session(data_dir(), SessionConfig(model="fake-model", rerank=False), loader=lambda _c: model)
    session.load_model()
    session.index([folder])
    logged: list[str] = []
    daemon = session.daemon([folder], rescan_seconds=3600, log=logged.append)
    daemon.debounce, daemon.retry_seconds = 0.1, 0.2
    thread = threading.Thread(target=daemon.run, daemon=True)
    server_up.clear()
    thread.start()
    try:
        for i in range(5):
            (folder / f"new{i}.txt").write_text(f"written while the server is down {i}")
        deadline = time.monotonic() + 30
        while sum("unreachable" in line for line in logged) < 3:  # several tries, each refused
            assert thread.is_alive(), "the daemon died"
            assert time.monotonic() < deadline, logged
            time.sleep(0.05)
        assert session.store.counts().get("indexed") == 1
        server_up.set()
        while session.store.counts().get("indexed") != 6:
            assert thread.is_alive(), "the daemon died"
            assert time.monotonic() < deadline + 30, logged
            time.sleep(0.05)
    finally:
        daemon.stop.set()
        thread.join(10)
        daemon.store.close()
        session.store.close()


def test_a_starting_daemon_rebuilds_a_prefilter_of_an_older_layout(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An index whose prefilter another version built (an older layout is ignored: exact search only) gets a
    new one when the daemon starts, though no file changed and so no batch runs."""
    from fake_model import indexed_notes

    from freeret_tui.engine import ann
    from freeret_tui.engine.store import vectors

    monkeypatch.setattr(vectors, "PREFILTER_MIN", 150)
    monkeypatch.setattr(ann, "CELL_SIZE", 64)
    folder = tmp_path / "notes"
    session = indexed_notes(folder, 200)
    assert session.store.prefilter_cells > 1
    session.store.set_meta("prefilter_layout", "cells-v2")  # as an older version left it
    assert session.store.prefilter_cells == 0
    daemon = session.daemon([folder], rescan_seconds=3600)
    started = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": started.set}, daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the daemon's first scan did not finish"
        assert session.store.prefilter_cells > 1
    finally:
        daemon.stop.set()
        thread.join(10)
        daemon.store.close()
        session.store.close()
