"""Indexing work: walk folders, skip what is unchanged, reuse vectors of known content, extract, embed in
batches, store, sweep. Used by the one-shot `index` command and by the watching daemon (``daemon.py``); this
module has no threads of its own.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from freeret_tui.engine.chunking import word_spans
from freeret_tui.engine.extract import extract, kind_of
from freeret_tui.engine.models.base import Model
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, IndexStats, Kind, Skip
from freeret_tui.settings import DEFAULT_EXCLUDE

# The default exclusions (settings.exclude overrides them); hidden folders are skipped as well.
JUNK_DIRS = frozenset(DEFAULT_EXCLUDE)

Progress = Callable[[int, int], None]
# Vectors of removed files are kept this long, so a file moved out of and back into a watched folder, or moved
# while nothing watched, is recognised by its content hash instead of embedded again.
TRASH_SECONDS = 24 * 3600


@dataclass
class _Pending:
    """A file waiting for its vectors: embedded in the next batch, or copied from a file with the same content."""

    path: Path
    root: Path
    size: int
    mtime: float
    sha256: str
    chunks: list[Chunk]
    same_as: "_Pending | None" = None  # a duplicate in the same batch: reuses that file's vectors
    vectors: np.ndarray | None = None


def indexable(root: Path, path: Path, exclude: frozenset[str] = JUNK_DIRS) -> bool:
    """Whether ``path`` (under ``root``) is a file freeret-tui indexes: known type, not hidden, not in junk."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    if any(part.startswith(".") for part in parts) or any(part in exclude for part in parts[:-1]):
        return False
    return kind_of(path) is not None and _encodable(str(path))


def _encodable(name: str) -> bool:
    """File names that are not valid UTF-8 (old Latin-1 archives) cannot be stored as SQLite text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk(
    roots: Iterable[Path],
    exclude: frozenset[str] = JUNK_DIRS,
    on_skip: Callable[[Skip], None] | None = None,
) -> Iterator[tuple[Path, Path]]:
    """(root, file) for every indexable file under the roots; symlinked folders are not followed (no loops).

    ``on_skip`` hears about files that cannot be indexed before they reach the store (undecodable names).
    """
    for root in roots:
        root = root.expanduser().resolve()
        if root.is_file():
            if kind_of(root) is not None:
                yield root.parent, root
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in exclude)
            for name in sorted(files):
                path = Path(folder, name)
                if name.startswith(".") or kind_of(path) is None:
                    continue
                if not _encodable(str(path)):
                    if on_skip:
                        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
                        on_skip(Skip(Path(shown), "file name is not valid UTF-8; rename it to index it", True))
                    continue
                yield root, path


def reconcile(store: Store, root: Path, exclude: frozenset[str] = JUNK_DIRS,
              on_skip: Callable[[Skip], None] | None = None) -> list[tuple[Path, Path]]:
    """Mark and sweep one root against the store: (root, path) of every file added, changed or gone since the
    index last saw it, judged on (size, mtime). What inotify missed (overflow, a daemon that was not running)
    is found here; the content hash later tells a moved file from a new one."""
    stored = store.file_states(root)
    changed: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for _, path in walk([root], exclude, on_skip):
        key = str(path)
        seen.add(key)
        try:
            st = path.stat()
        except OSError:
            changed.append((root, path))  # let the indexer record why it cannot be read
            continue
        if stored.get(key) != (st.st_size, st.st_mtime):
            changed.append((root, path))
    changed += [(root, Path(p)) for p in stored if p not in seen]
    return changed


def _text_only(chunks: list[Chunk], model_name: str) -> list[Chunk] | Skip:
    """What a text-only model can index of a file: its passages (scanned pages and images need a vision model)."""
    text = [c for c in chunks if c.kind is Kind.TEXT]
    if text:
        return text
    what = "images" if chunks[0].kind is Kind.IMAGE else "scanned pages (no text layer)"
    return Skip(chunks[0].path, f"model {model_name!r} is text-only; use a vision model to index {what}")


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
    on_commit: Callable[[list[Path]], None] | None = None,
    offline_roots: frozenset[Path] = frozenset(),
    exclude: frozenset[str] = JUNK_DIRS,
) -> IndexStats:
    """Bring the index in line with each (root, path): new or changed files are indexed, vanished ones removed.

    A file whose size and mtime match is not read; one whose content hash matches a stored file (a copy, a move,
    a rename, a `touch`) reuses those vectors instead of running the model. Work is committed in batches of about
    ``flush_items`` chunks, each in one transaction that also calls ``on_commit`` with the paths it settled (the
    daemon dequeues them there, so a kill at any moment loses nothing and repeats nothing committed). Files under
    ``offline_roots`` that are missing are left alone (an unmounted drive is not a deletion).
    """
    started = time.perf_counter()
    store.bind_model(model.name, model.dim, model.image_max_pixels)
    tokenize = getattr(model, "token_spans", word_spans)
    skipped: list[Skip] = []
    pending: list[_Pending] = []
    by_sha: dict[str, _Pending] = {}
    writes: list[Callable[[], None]] = []  # skips, touches, removals: applied in the batch's transaction
    settled: list[Path] = []
    indexed = unchanged = items = done = removed = 0

    def flush() -> None:
        nonlocal indexed, items
        fresh = [p for p in pending if p.same_as is None and p.vectors is None]
        chunks = [c for p in fresh for c in p.chunks]
        if chunks:  # the model runs outside the transaction: readers are never blocked by it
            vectors = model.embed([c.content() for c in chunks], Side.CANDIDATE, [c.kind for c in chunks])
            offset = 0
            for p in fresh:
                p.vectors = vectors[offset : offset + len(p.chunks)]
                offset += len(p.chunks)
        with store.transaction():
            for p in pending:
                source = p.same_as or p
                assert source.vectors is not None
                chunks_here = [replace(c, path=p.path, title=p.path.name) for c in source.chunks]
                store.put_file(p.path, p.root, p.size, p.mtime, p.sha256, chunks_here, source.vectors,
                               embedded=p in fresh)
            for write in writes:
                write()
            if on_commit:
                on_commit(settled)
        indexed += len(pending)
        items += len(chunks)
        pending.clear()
        by_sha.clear()
        writes.clear()
        settled.clear()
        if progress:
            progress(done, len(files))

    for root, path in files:
        done += 1
        settled.append(path)
        try:
            st: os.stat_result | None = path.stat()
        except FileNotFoundError:
            st = None
        except OSError as err:
            skip = Skip(path, f"cannot read: {err.strerror or err}", failed=True)
            skipped.append(skip)
            writes.append(lambda s=skip, r=root: store.put_skip(s.path, r, 0, 0.0, s.reason, failed=True))
            continue
        if st is None or not indexable(root, path, exclude):  # gone, or excluded since it was stored
            if store.file_row(path) is not None and not any(path.is_relative_to(r) for r in offline_roots):
                writes.append(lambda path=path: store.remove_file(path))
                removed += 1
            continue
        row = store.file_row(path)
        if row is not None and (row.size, row.mtime) == (st.st_size, st.st_mtime):
            unchanged += 1
            continue
        try:
            sha = _sha256(path)
        except OSError as err:
            skip = Skip(path, f"cannot read: {err.strerror or err}", failed=True)
            skipped.append(skip)
            writes.append(lambda s=skip, r=root, st=st: store.put_skip(s.path, r, st.st_size, st.st_mtime, s.reason,
                                                                       failed=True))
            continue
        if row is not None and row.sha256 == sha and row.status == "indexed":
            writes.append(lambda path=path, st=st: store.touch_file(path, st.st_size, st.st_mtime))
            unchanged += 1
            continue
        if sha in by_sha:
            pending.append(_Pending(path, root, st.st_size, st.st_mtime, sha, [], same_as=by_sha[sha]))
            continue
        reuse = store.reusable(sha, path)
        if reuse is not None:
            pending.append(_Pending(path, root, st.st_size, st.st_mtime, sha, reuse[0], vectors=reuse[1]))
            continue
        result = extract(path, tokenize, chunk_tokens, overlap)
        if isinstance(result, list) and not model.supports_images:
            result = _text_only(result, model.name)
        if isinstance(result, Skip):
            skipped.append(result)
            writes.append(lambda s=result, r=root, st=st: store.put_skip(s.path, r, st.st_size, st.st_mtime,
                                                                         s.reason, failed=s.failed))
            continue
        entry = _Pending(path, root, st.st_size, st.st_mtime, sha, result)
        pending.append(entry)
        by_sha[sha] = entry
        if sum(len(p.chunks) for p in pending) >= flush_items or len(settled) >= 4 * flush_items:
            flush()
    flush()
    return IndexStats(
        files_seen=len(files),
        files_indexed=indexed,
        files_unchanged=unchanged,
        items_added=items,
        skipped=tuple(skipped),
        seconds=time.perf_counter() - started,
        files_removed=removed,
    )


def sweep(store: Store, roots: Iterable[Path], present: Iterable[Path]) -> int:
    """Remove stored files under ``roots`` that are no longer on disk; returns how many went."""
    keep = {str(p) for p in present}
    gone = [p for p in store.paths_under([r.expanduser().resolve() for r in roots]) if p not in keep]
    with store.transaction():
        for path in gone:
            store.remove_file(Path(path))
        store.purge_trash(time.time() - TRASH_SECONDS)
    return len(gone)
