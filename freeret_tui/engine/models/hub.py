"""A hub model's files: from the Hugging Face cache, or downloaded into it once (with a progress bar). Without
network and without the files, the error says how to start anyway."""

from __future__ import annotations

import os
import sys

from freeret_tui.errors import OFFLINE_START, ModelLoadError

# Only what inference needs: skips ONNX/GGUF/original-checkpoint copies that many hub repos also carry.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]


def hub_snapshot(repo_id: str) -> str:
    """Local path of a hub model: from the HF cache, or downloaded once with a progress bar."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True)
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
        return snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise ModelLoadError(f"could not download model {repo_id} ({type(err).__name__}: no network?)", steps) from None
