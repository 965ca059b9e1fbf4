"""A GGUF file's model as transformers converts it, kept on disk as a model directory — its config, its tokenizer
and the de-quantised weights in the dtype they were loaded in — so that only a file's first load pays for the
conversion. transformers and safetensors are imported inside functions only.

Why: transformers converts a GGUF file in Python on every load. SmolLM2-135M's (the offline `smollm2` preset, a
98 MB file) took 24-27 s to load on a 2-core CPU: ~9 s reading its config and tokenizer from the file's metadata,
the rest the weights (the metadata parsed twice more, a tensor-name map built once per tensor); every `search` and
`ask` paid it again. From its converted copy the whole load takes 4.5 s, imports included (README, Cold start).
The copy holds the very tensors that load produced, in the dtype asked for (tests/test_gguf_cache.py compares them
bit for bit), so the model computes what it computed converted, up to the last bits in which any two loads differ.

Where: ``FREERET_CACHE_DIR``, else platformdirs' user cache dir — a machine's cache, like Hugging Face's own hub
cache (``HF_HOME``), which a Ray worker on another machine keeps for itself — under ``gguf/``: one folder per GGUF
file (its name and a hash of its path), holding one copy per (the file's size and mtime, the transformers and gguf
versions, the dtype). A change to any of the first three converts again, and the copies of the file's earlier
states go then. A copy is written under a temporary name and renamed into place once whole, so a load never reads
a half-written one; one with a file missing or cut short (against the list of files and sizes written last), or
that fails to load, is dropped and the file converted again (``forget``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from freeret_tui.engine.models.presets import ModelSource

_LOG = logging.getLogger(__name__)
# A temporary folder this old is a write that was killed (a conversion writes SmolLM2's copy in ~1 s).
_STALE_PARTIAL_S = 3600
_PARTIAL = ".partial-"
# Written last: each file of the copy and its size in bytes.
_MANIFEST = "freeret-files.json"


def cache_root() -> Path:
    """The folder holding every converted GGUF file."""
    override = os.environ.get("FREERET_CACHE_DIR")
    if override:
        return Path(override).expanduser() / "gguf"
    import platformdirs

    return Path(platformdirs.user_cache_dir("freeret-tui", appauthor=False)) / "gguf"


def _folder(gguf: Path) -> Path:
    path = str(gguf.resolve())
    return cache_root() / f"{gguf.stem[:60]}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"


def _state(gguf: Path) -> str:
    """What the conversion depends on besides the dtype: the file as it is now and the code that converts it."""
    stat = gguf.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}-{_version('transformers')}-{_version('gguf')}"


def _version(package: str) -> str:
    try:
        return f"{package}{importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:  # nothing can convert the file then: no copy will match
        return f"{package}-none"


def converted(source: ModelSource, dtype: str | None) -> ModelSource:
    """``source``, or where it is a GGUF file with a converted copy (in ``dtype``; in any, if None: its config and
    tokenizer are the same in every copy) that copy as a model directory, under the same name."""
    if source.kind != "gguf":
        return source
    gguf = Path(source.location)
    try:
        folder, state = _folder(gguf), _state(gguf)
        names = [f"{state}-{dtype}"] if dtype else sorted(p.name for p in folder.glob(f"{state}-*"))
        copies = [folder / name for name in names if (folder / name).is_dir()]
    except OSError:  # the file or the cache is unreadable: the file's own load says why, or converts
        return source
    for copy in copies:
        found = ModelSource(source.spec, "dir", str(copy), source.rerank_useful)
        if _whole(copy):
            return found
        forget(found)
    return source


def _whole(copy: Path) -> bool:
    """Whether every file the copy was written with is there at its size. A file gone missing would not always
    fail the load: without chat_template.jinja the model would load and render its prompts another way."""
    try:
        sizes = json.loads((copy / _MANIFEST).read_text(encoding="utf-8"))
        return all((copy / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, AttributeError):
        return False


def keep(source: ModelSource, dtype: str, model: Any, tokenizer: Any) -> Path | None:
    """Write ``model`` and ``tokenizer``, just converted from the GGUF file ``source``, as its copy in ``dtype``;
    drop the copies of the file's earlier states. Returns the copy, or None where it could not be written (a full
    disk, an unwritable cache: the model is loaded all the same, and the next load converts again)."""
    import copy

    from safetensors import SafetensorError
    from safetensors.torch import save_file

    gguf = Path(source.location)
    folder = _folder(gguf)
    partial = folder / f"{_PARTIAL}{os.getpid()}-{time.monotonic_ns()}"
    try:
        state = _state(gguf)
        partial.mkdir(parents=True)
        # transformers refuses to save a model it loaded from GGUF (its quantizer is not serialisable), though the
        # tensors are plain ones: the copy is written as save_pretrained lays one out, without the GGUF marker.
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(partial)
        model.generation_config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        tied = set(getattr(model, "all_tied_weights_keys", None) or {})  # tied at load from the tensor they name
        # A model whose linear layers were packed since it loaded (packing.py) holds oneDNN tensors, which
        # safetensors cannot write: their plain copies, the same values (a bf16 CPU's load packs every layer).
        weights = {name: tensor.to_dense() if tensor.is_mkldnn else tensor
                   for name, tensor in model.state_dict().items() if name not in tied}
        save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
        sizes = {path.name: path.stat().st_size for path in partial.iterdir()}
        (partial / _MANIFEST).write_text(json.dumps(sizes, indent=1, sort_keys=True), encoding="utf-8")
        target = folder / f"{state}-{dtype}"
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():  # else another process converting the same file got there first
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except (OSError, RuntimeError, ValueError, SafetensorError) as err:  # the disk; tensors safetensors refuses
        shutil.rmtree(partial, ignore_errors=True)
        _LOG.warning("could not keep the converted copy of %s in %s (%s): the next load converts it again",
                     gguf, folder, err)
        return None
    _drop_earlier(folder, state)
    return target


def _drop_earlier(folder: Path, state: str) -> None:
    """Remove the copies of the file's earlier states, and temporary folders of writes that were killed."""
    try:
        for path in folder.iterdir():
            partial = path.name.startswith(_PARTIAL)
            if (partial and time.time() - path.stat().st_mtime > _STALE_PARTIAL_S) or not (
                    partial or path.name.startswith(state)):
                shutil.rmtree(path, ignore_errors=True)
    except OSError as err:  # another process removed one first; the next write tries again
        _LOG.warning("could not tidy %s: %s", folder, err)


def forget(copy: ModelSource) -> None:
    """Drop a converted copy that is damaged or failed to load: its file is converted again."""
    _LOG.warning("the converted copy at %s is damaged: converting its GGUF file again", copy.location)
    shutil.rmtree(copy.location, ignore_errors=True)
