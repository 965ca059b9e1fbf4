"""One-shot indexing of folders: walk, skip what is unchanged, extract, embed in batches, store, sweep.

The watching daemon (index issue) reuses ``index_files``; this module has no threads of its own.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from freeret_tui.engine.chunking import word_spans
from freeret_tui.engine.extract import extract, kind_of
from freeret_tui.engine.models.base import Model
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, IndexStats, Kind, Skip

# Folders nobody searches their own files in; hidden folders (".git", ".cache", …) are skipped as well.
JUNK_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages", "$RECYCLE.BIN"})

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Pending:
    path: Path
    root: Path
    size: int
    mtime: float
    chunks: list[Chunk]


def walk(roots: Iterable[Path]) -> Iterator[tuple[Path, Path]]:
    """(root, file) for every indexable file under the roots; symlinked folders are not followed (no loops)."""
    for root in roots:
        root = root.expanduser().resolve()
        if root.is_file():
            if kind_of(root) is not None:
                yield root.parent, root
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in JUNK_DIRS)
            for name in sorted(files):
                path = Path(folder, name)
                if not name.startswith(".") and kind_of(path) is not None:
                    yield root, path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_files(
    store: Store,
    model: Model,
    files: Sequence[tuple[Path, Path]],
    chunk_tokens: int = 256,
    overlap: int = 32,
    progress: Progress | None = None,
    flush_items: int = 64,
) -> IndexStats:
    """Index (root, path) pairs whose size or mtime changed; skips are recorded with their reason."""
    started = time.perf_counter()
    store.bind_model(model.name, model.dim)
    tokenize = getattr(model, "token_spans", word_spans)
    skipped: list[Skip] = []
    pending: list[_Pending] = []
    indexed = unchanged = items = done = 0

    def flush() -> None:
        nonlocal indexed, items, done
        chunks = [c for p in pending for c in p.chunks]
        if chunks:
            vectors = model.embed([c.content() for c in chunks], Side.CANDIDATE, [c.kind for c in chunks])
            offset = 0
            for p in pending:
                store.put_file(p.path, p.root, p.size, p.mtime, _sha256(p.path), p.chunks,
                               vectors[offset : offset + len(p.chunks)])
                offset += len(p.chunks)
            indexed += len(pending)
            items += len(chunks)
            done += len(pending)
        pending.clear()
        if progress:
            progress(done, len(files))

    for root, path in files:
        try:
            st = path.stat()
        except OSError as err:
            skipped.append(Skip(path, f"cannot read: {err.strerror or err}"))
            done += 1
            continue
        if store.file_state(path) == (st.st_size, st.st_mtime):
            unchanged += 1
            done += 1
            continue
        result = extract(path, tokenize, chunk_tokens, overlap)
        if isinstance(result, list) and result[0].kind is Kind.IMAGE and not model.supports_images:
            result = Skip(path, f"model {model.name!r} is text-only; use a vision model to index images")
        if isinstance(result, Skip):
            store.put_skip(path, root, st.st_size, st.st_mtime, result.reason)
            skipped.append(result)
            done += 1
            continue
        pending.append(_Pending(path, root, st.st_size, st.st_mtime, result))
        if sum(len(p.chunks) for p in pending) >= flush_items:
            flush()
    flush()
    return IndexStats(
        files_seen=len(files),
        files_indexed=indexed,
        files_unchanged=unchanged,
        items_added=items,
        skipped=tuple(skipped),
        seconds=time.perf_counter() - started,
    )


def sweep(store: Store, roots: Iterable[Path], present: Iterable[Path]) -> int:
    """Remove stored files under ``roots`` that are no longer on disk; returns how many went."""
    keep = {str(p) for p in present}
    gone = [p for p in store.paths_under([r.expanduser().resolve() for r in roots]) if p not in keep]
    for path in gone:
        store.remove_file(Path(path))
    return len(gone)
