"""The model served by `freeret-tui serve` (Ray Serve on a local Ray cluster with token auth, the tiny Idefics3)
against the same model in-process: vectors, rerank probabilities and a streamed answer are equal; the endpoint
wants its token; a killed replica loses no request; a version mismatch and a vanished server are said plainly."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from freeret_tui.engine.models.remote import RemoteModel
from freeret_tui.engine.prompts import IMAGE_MARK, Framing, Side
from freeret_tui.engine.types import Content
from freeret_tui.errors import ModelLoadError, ModelUnavailableError

TOKEN = "test-token-" + "x" * 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_dirs: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    """`freeret-tui serve` in its own process (its own local Ray cluster), up until the module's tests end."""
    port = _free_port()
    env = {**os.environ, "FREERET_DATA_DIR": str(tmp_path_factory.mktemp("serve-data")),
           "FREERET_SERVE_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token"}
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "freeret_tui", "serve", "--model", str(tiny_dirs["idefics3"]), "--device", "cpu",
         "--dtype", "float32", "--batch-size", "4", "--max-new-tokens", "12", "--port", str(port), "--name", "tiny"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"serve:http://127.0.0.1:{port}/tiny"
    deadline = time.monotonic() + 180
    while "Ctrl+C stops it." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"freeret-tui serve did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    yield url, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def remote(server: tuple[str, subprocess.Popen]) -> RemoteModel:
    return RemoteModel(server[0], TOKEN)


def _items() -> list[Content]:
    photos = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))[:3]
    return [Content(text="a rocket on the launch pad"), Content(text="coffee"), Content(text="x " * 300),
            *(Content(image=p) for p in photos), Content(text="caption", image=photos[0])]


def test_served_vectors_rerank_and_answer_equal_the_local_model(remote: RemoteModel, idefics3) -> None:
    assert (remote.name, remote.dim, remote.supports_images, remote.image_max_pixels) == (
        idefics3.name, idefics3.dim, idefics3.supports_images, idefics3.image_max_pixels)
    items = _items()
    for side in Side:
        np.testing.assert_allclose(remote.embed(items, side), idefics3.embed(items, side), atol=1e-5)
    query = Content(text="rocket")
    for framing in Framing:
        np.testing.assert_allclose(remote.rerank(query, items, framing), idefics3.rerank(query, items, framing),
                                   atol=1e-5)
    photo = items[3].image
    served = list(remote.generate("Answer briefly.", f"What is this? {IMAGE_MARK}", [photo]))
    local = list(idefics3.generate("Answer briefly.", f"What is this? {IMAGE_MARK}", [photo]))
    assert len(served) > 1 and "".join(served) == "".join(local)  # streamed in pieces, the same text
    assert remote.token_spans("The quick brown fox") == idefics3.token_spans("The quick brown fox")


def test_the_endpoint_wants_the_token(server: tuple[str, subprocess.Popen]) -> None:
    url = server[0].removeprefix("serve:")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url + "/info", headers=headers), timeout=30)
        assert refused.value.code == 401
    with pytest.raises(ModelLoadError, match="refused this client's token"):
        RemoteModel(server[0], "wrong")


def test_the_client_imports_neither_torch_nor_ray(server: tuple[str, subprocess.Popen]) -> None:
    code = (
        "import sys\n"
        "from freeret_tui.engine.models import load_model\n"
        "from freeret_tui.engine.prompts import Side\n"
        "from freeret_tui.engine.types import Content\n"
        f"model = load_model({server[0]!r}, serve_token={TOKEN!r})\n"
        "assert model.embed([Content(text='hello')], Side.QUERY).shape == (1, model.dim)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_client_of_another_version_is_refused(server: tuple[str, subprocess.Popen],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import freeret_tui.engine.models.remote as remote_module

    monkeypatch.setattr(remote_module, "ENGINE_VERSION", "0.0.0-other")
    with pytest.raises(ModelLoadError, match="runs freeret-tui .* this is 0.0.0-other"):
        RemoteModel(server[0], TOKEN)


def _replica_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "ServeReplica:tiny"], capture_output=True, text=True, check=False)
    return {int(p) for p in out.stdout.split()}


def test_a_killed_replica_loses_no_request(remote: RemoteModel, idefics3) -> None:
    items = _items()[:3]
    expected = idefics3.embed(items, Side.CANDIDATE)
    before = _replica_pids()
    assert before, "no Serve replica process found"
    results: list[np.ndarray] = []
    failures: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(40):
                results.append(remote.embed(items, Side.CANDIDATE))
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            failures.append(err)

    worker = threading.Thread(target=client)
    worker.start()
    while not results and worker.is_alive():
        time.sleep(0.01)
    for pid in before:
        os.kill(pid, signal.SIGKILL)  # mid-run: some requests done, most not
    worker.join(180)
    assert not failures and len(results) == 40
    for vectors in results:
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
    after = _replica_pids()
    assert after and not after & before  # Serve started a new replica, which answered the rest


def test_an_index_built_through_the_server_goes_on_using_it(server: tuple[str, subprocess.Popen],
                                                            tmp_path: Path) -> None:
    """Indexing photos and notes through the server (pictures travel as pixels); a later command that names no
    model searches through the same server, not a local copy of its model."""
    from freeret_tui.engine.query import Query
    from freeret_tui.engine.session import Session, SessionConfig

    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "lighthouse.txt").write_text("The keeper lights the lamp of the lighthouse every evening.")
    shutil.copy(next(p for p in SAMPLES.iterdir() if p.suffix == ".jpg"), folder / "photo.jpg")
    data = tmp_path / "data"
    data.mkdir()
    first = Session(data, SessionConfig(model=server[0], model_named=True, serve_token=TOKEN))
    first.load_model()
    stats, _ = first.index([folder])
    assert (stats.files_indexed, stats.items_added) == (2, 2)
    later = Session(data, SessionConfig(serve_token=TOKEN))
    assert later.config.model == server[0]
    assert later.load_model().device.endswith(server[0].removeprefix("serve:"))
    hits = later.search(Query("lighthouse keeper")).hits
    assert hits and hits[0].path.name == "lighthouse.txt"


def test_a_vanished_server_is_said_plainly(server: tuple[str, subprocess.Popen]) -> None:
    """Last in this module: it stops the server."""
    url, proc = server
    # Indexing would wait 10 minutes for the server; a search, which a person watches, 2 s.
    model = RemoteModel(url, TOKEN, retry_seconds=600.0, search_retry_seconds=2.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="unreachable") as gone:
        model.embed([Content(text="hello")], Side.QUERY)
    assert "searching by words goes on" in gone.value.explain()
    for call in (lambda: model.rerank(Content(text="q"), [Content(text="c")]),
                 lambda: model.embed([Content(text="a note")], Side.CANDIDATE)):
        with pytest.raises(ModelUnavailableError):  # known to be gone: the next calls fail at once, no retries
            call()
    assert time.monotonic() - started < 30
    with pytest.raises(ModelLoadError, match="unreachable"):
        RemoteModel(url, TOKEN, retry_seconds=1.0)


@pytest.mark.torch  # no torch, but Ray and FastAPI, which the torch-free tier leaves out with the model packages
def test_a_refused_request_fails_alone_in_its_batch() -> None:
    """Requests gathered into one model call: one the model refuses (an image for a text-only model) gets its
    reason; the others in the same call get their results."""
    import asyncio

    from freeret_tui.engine.ray_serve import _gathered
    from freeret_tui.errors import UnsupportedInputError

    def embed(items: list[Content]) -> list[str]:
        if any(c.is_image for c in items):
            raise UnsupportedInputError("model 'text-only' cannot read images")
        return [c.text.upper() for c in items]

    parts = [[Content(text="a"), Content(text="b")], [Content(image=Path("x.jpg"))], [Content(text="c")]]
    results = asyncio.run(_gathered(embed, parts))
    assert results[0] == ["A", "B"] and results[2] == ["C"]
    assert isinstance(results[1], UnsupportedInputError)
