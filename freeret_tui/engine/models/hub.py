"""A hub model's files: from the Hugging Face cache, or downloaded into it once (with a progress bar). Without
network and without the files, the error says how to start anyway."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from freeret_tui.errors import OFFLINE_START, ModelLoadError

# Only what inference needs: skips ONNX/GGUF/original-checkpoint copies that many hub repos also carry.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]
# What reading inputs needs (config, tokenizer, processor): a few MB, where a bulk index only chunks text.
_READER_PATTERNS = [p for p in _HUB_PATTERNS if p != "*.safetensors"]


def hub_snapshot(repo_id: str, weights: bool = True) -> str:
    """Local path of a hub model: from the HF cache, or downloaded once with a progress bar. ``weights`` False:
    its config and tokenizer files only."""
    patterns = _HUB_PATTERNS if weights else _READER_PATTERNS
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        found = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
        # A cache that holds only the config and tokenizer (a bulk index's driver fetched them) lacks the weights.
        if not weights or any(Path(found).glob("*.safetensors")):
            return found
    except LocalEntryNotFoundError:
        pass
    steps = (
        OFFLINE_START,
        f"or start once with network: {repo_id} downloads into the Hugging Face cache, and later starts need none",
        f"or pass `--model` a local model directory or .gguf file (`hf download {repo_id} --local-dir DIR` makes one "
        "on a machine with network)",
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise ModelLoadError(f"model {repo_id} is not in the Hugging Face cache, and HF_HUB_OFFLINE is set", steps)
    print(f"Downloading {repo_id} into the Hugging Face cache (once)…", file=sys.stderr)
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise ModelLoadError(f"could not download model {repo_id} ({type(err).__name__}: no network?)", steps) from None
