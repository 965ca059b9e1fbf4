"""Indexing work: skip what is unchanged, reuse vectors of known content, extract, embed in batches, store.
Used by the one-shot `index` command and by the watching daemon (``daemon.py``); which files to look at comes
from ``scan.py``. This module has no threads of its own.

Model calls are kept short (``IndexOptions.call_seconds``, by the rate measured in the run): a call holds the
model, which the TUI's searches share with its daemon, and progress, a pause or a stop take effect between calls.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from freeret_tui.engine.chunking import word_spans
from freeret_tui.engine.extract import extract
from freeret_tui.engine.models.base import Model
from freeret_tui.engine.photo_meta import photo_meta, pixels_digest
from freeret_tui.engine.pictures import load_image_or_reason
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.scan import JUNK_DIRS, indexable
from freeret_tui.engine.sidecars import sidecar_state
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, IndexStats, Kind, Skip, title_of

# Called after each model call and each commit: files settled, files in all, items embedded so far.
Progress = Callable[[int, int, int], None]


class Interrupted(Exception):
    """Raised by an ``index_files`` caller's ``between`` hook to drop the batch in flight: nothing of it is
    committed (a daemon's paths stay queued), what earlier batches committed stays."""


@dataclass(frozen=True)
class IndexOptions:
    """How files become items: chunk sizes in model tokens, the folder names never indexed, and at most how many
    chunks one model call and one transaction take (the daemon alone: 64; beside the TUI: fewer), and about how
    long one model call may take."""

    chunk_tokens: int = 256
    chunk_overlap: int = 32
    exclude: frozenset[str] = JUNK_DIRS
    flush_items: int = 64
    # Seconds of model time a call of indexing takes at most (one item at least), by the seconds per item its
    # last call took. A search beside the daemon waits for the call in flight, and a stop or a pause waits for it
    # too: before, a 196-passage note was one call of 114-149 s with SmolLM2 on a 2-core CPU, and now a search
    # waited 1.1 s (p50), a stop 3.9 s (benchmarks/search_while_indexing.py); 8 photos at the default preset's
    # 12.8 s each (fp32, no bf16) would be 100 s. The short calls cost nothing measurable on a CPU, whose batches
    # are 2 items (84 passages: 57.9 and 61.1 s paced, 60.2 and 57.1 s in one call); on a GPU 64 items fit.
    call_seconds: float = 5.0


class _Pace:
    """How many items the next model call takes: as many as the last call's seconds per item fit in
    ``call_seconds``, between 1 and ``most``; before any call was timed, one of the model's batches (``first``:
    2 on a CPU, 16 on a GPU), what it runs at once anyway."""

    def __init__(self, call_seconds: float, most: int, first: int) -> None:
        self.call_seconds, self.most, self.first = call_seconds, max(1, most), max(1, min(first, most))
        self.per_item: float | None = None

    def items(self) -> int:
        if self.per_item is None:
            return self.first
        return max(1, min(self.most, int(self.call_seconds / max(self.per_item, 1e-9))))

    def timed(self, items: int, seconds: float) -> None:
        self.per_item = seconds / max(items, 1)


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
    taken: float | None = None  # when a photo was taken (photo_meta.py)
    words: str = ""  # a photo's own words, this path's (a copy's sidecars are its own)
    sidecars: str = ""  # the fingerprint of the sidecars they were read with
    pixels: str | None = None  # a JPEG's or PNG's digest without its metadata (photo_meta.pixels_digest)


def text_only(chunks: list[Chunk], model_name: str) -> list[Chunk] | Skip:
    """What a text-only model can index of a file: its passages (scanned pages and images need a vision model)."""
    text = [c for c in chunks if c.kind is Kind.TEXT]
    if text:
        return text
    what = "images" if chunks[0].kind is Kind.IMAGE else "scanned pages (no text layer)"
    return Skip(chunks[0].path, f"model {model_name!r} is text-only; use a vision model to index {what}")


def not_followed(root: Path, path: Path, st: os.stat_result) -> Skip | None:
    """Why ``path`` is not read at all: only regular files are (a FIFO would block, a device never ends), and a
    symbolic link only to a file inside its own watched folder (not /etc/shadow, /proc/self/environ…). A folder
    arrives here only when the scan could not list it: why is recorded in place of its files."""
    if stat.S_ISDIR(st.st_mode):
        try:
            os.scandir(path).close()
        except OSError as err:
            return Skip(path, f"cannot list this folder: {err.strerror or err}; its files are not indexed", True)
        return None  # listable now: its files are scanned one by one
    if not stat.S_ISREG(st.st_mode):
        return Skip(path, "not a regular file (a FIFO, device or socket): not read")
    if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
        return Skip(path, "symbolic link to a file outside the watched folder: not followed")
    return None


def missing_target(path: Path) -> Skip | None:
    """A dangling symbolic link is found by the scan but has nothing to read: said, not silently dropped."""
    try:
        target = os.readlink(path)
    except OSError:  # not a link (the file is simply gone), or removed meanwhile
        return None
    return Skip(path, f"symbolic link to a missing file ({target}): nothing to read")


def cannot_stat(path: Path, err: OSError) -> Skip:
    if err.errno == errno.ENAMETOOLONG:
        return Skip(path, "path longer than this system allows (PATH_MAX): the file cannot be opened", True)
    return Skip(path, f"cannot read: {err.strerror or err}", True)


def _unreadable(p: _Pending) -> str | None:
    """Why the images or pages of ``p`` cannot be loaded now, if they cannot."""
    for chunk in p.chunks:
        picture = chunk.content().image
        if picture is not None and isinstance(reason := load_image_or_reason(picture), str):
            return reason
    return None


def sha256_of(path: Path) -> str:
    """The content hash, read from a regular file only: opened without blocking and checked after opening, so a
    file swapped for a FIFO or a device since it was listed raises instead of hanging or reading forever."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_files(
    store: Store,
    model: Model,
    files: Sequence[tuple[Path, Path]],
    options: IndexOptions = IndexOptions(),
    progress: Progress | None = None,
    on_commit: Callable[[list[Path]], None] | None = None,
    offline_roots: frozenset[Path] = frozenset(),
    between: Callable[[], None] | None = None,
) -> IndexStats:
    """Bring the index in line with each (root, path): new or changed files are indexed, vanished ones removed.

    A file whose size and mtime match is not read; one whose content hash matches a stored file (a copy, a move,
    a rename, a `touch`) reuses those vectors instead of running the model. Work is committed in batches of as
    many chunks as one model call takes (``_Pace``; a long file's chunks in several calls, committed together),
    each in one transaction that also calls ``on_commit`` with the paths it settled (the daemon dequeues them
    there, so a kill at any moment loses nothing and repeats nothing committed). ``between`` runs before each
    model call (the daemon waits there while paused, and raises ``Interrupted`` to stop). Files under
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
    indexed = unchanged = items = done = removed = embedded = reread = 0
    pace = _Pace(options.call_seconds, options.flush_items, model.batch_size)

    def embed(batch: list[_Pending]) -> None:
        nonlocal embedded
        chunks = [c for p in batch for c in p.chunks]
        if not chunks:
            return
        parts: list[np.ndarray] = []  # each call's vectors
        at = 0
        while at < len(chunks):
            if between:
                between()
            some = chunks[at : at + pace.items()]
            started = time.perf_counter()
            parts.append(model.embed([c.content() for c in some], Side.CANDIDATE, [c.kind for c in some]))
            pace.timed(len(some), time.perf_counter() - started)
            at += len(some)
            embedded += len(some)
            if progress:
                progress(done - len(settled), len(files), embedded)
        vectors = np.concatenate(parts)
        offset = 0
        for p in batch:
            p.vectors = vectors[offset : offset + len(p.chunks)]
            offset += len(p.chunks)

    def reread_meta(path: Path, sidecars: str) -> None:
        """A photo whose sidecars or own metadata changed: its words and date read again now, written in the
        batch's transaction."""
        nonlocal reread
        meta = photo_meta(path)
        writes.append(lambda: store.set_photo_meta(path, *meta, sidecars))
        reread += 1

    def fail(p: _Pending, reason: str) -> None:
        skip = Skip(p.path, reason, failed=True)
        skipped.append(skip)
        writes.append(lambda p=p, s=skip: store.put_skip(p.path, p.root, p.size, p.mtime, s.reason, failed=True))

    def flush() -> None:
        nonlocal indexed, items
        fresh = [p for p in pending if p.same_as is None and p.vectors is None]
        try:  # the model runs outside the transaction: readers are never blocked by it
            embed(fresh)
        except Interrupted:
            raise
        except Exception:
            # Images and PDF pages are read again now: one deleted, truncated or unrenderable since the scan fails
            # alone (recorded), and the rest of the batch is embedded without it. A failure no file explains is
            # the model's own and goes up.
            unreadable = {id(p): reason for p in fresh if (reason := _unreadable(p))}
            if not unreadable:
                raise
            for p in list(pending):
                source = p.same_as or p
                if id(source) in unreadable:
                    fail(p, f"cannot read it to embed: {unreadable[id(source)]}")
                    pending.remove(p)
            fresh = [p for p in fresh if id(p) not in unreadable]
            embed(fresh)
        chunks = [c for p in fresh for c in p.chunks]
        with store.transaction():
            for p in pending:
                source = p.same_as or p
                assert source.vectors is not None
                chunks_here = [replace(c, path=p.path, title=title_of(p.path),
                                       text=p.words if c.kind is Kind.IMAGE else c.text) for c in source.chunks]
                store.put_file(p.path, p.root, p.size, p.mtime, p.sha256, chunks_here, source.vectors,
                               embedded=p in fresh, taken=p.taken, sidecars=p.sidecars, pixels=p.pixels)
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
            progress(done, len(files), embedded)

    for root, path in files:
        done += 1
        settled.append(path)
        try:
            st: os.stat_result | None = path.stat()
        except FileNotFoundError:
            st = None
            skip = missing_target(path)
        except OSError as err:
            st, skip = None, cannot_stat(path, err)
        else:
            skip = not_followed(root, path, st)
        if skip is not None:
            skipped.append(skip)
            size, mtime = (st.st_size, st.st_mtime) if st is not None else (0, 0.0)
            writes.append(lambda s=skip, r=root, n=size, m=mtime: store.put_skip(s.path, r, n, m, s.reason, s.failed))
            continue
        if st is None or not indexable(root, path, options.exclude):  # gone, or excluded since it was stored
            if store.file_row(path) is not None and not any(path.is_relative_to(r) for r in offline_roots):
                writes.append(lambda path=path: store.remove_file(path))
                removed += 1
            continue
        row = store.file_row(path)
        sidecars = sidecar_state(path)
        # A sidecar written, added or removed: the photo's words and date are read again, its vectors kept.
        sidecars_changed = row is not None and row.status == "indexed" and row.sidecars != sidecars
        if row is not None and (row.size, row.mtime) == (st.st_size, st.st_mtime):
            if sidecars_changed:
                reread_meta(path, sidecars)
            unchanged += 1
            continue
        try:
            sha = sha256_of(path)
        except OSError as err:
            skip = Skip(path, f"cannot read: {err.strerror or err}", failed=True)
            skipped.append(skip)
            writes.append(lambda s=skip, r=root, st=st: store.put_skip(s.path, r, st.st_size, st.st_mtime, s.reason,
                                                                       failed=True))
            continue
        if row is not None and row.sha256 == sha and row.status == "indexed":
            writes.append(lambda path=path, st=st: store.touch_file(path, st.st_size, st.st_mtime))
            if sidecars_changed:
                reread_meta(path, sidecars)
            unchanged += 1
            continue
        pixels = pixels_digest(path)
        if row is not None and row.status == "indexed" and pixels is not None and row.pixels == pixels:
            # Only what the photo says about itself was written (a keyword, a caption, a corrected date): the
            # pixels, and so the vectors, are as they were.
            writes.append(lambda path=path, st=st, sha=sha: store.touch_file(path, st.st_size, st.st_mtime, sha))
            reread_meta(path, sidecars)
            unchanged += 1
            continue
        # A copy or a move reuses vectors, not a photo's date and words: read again (the header and sidecars only).
        taken, words = photo_meta(path)
        meta = {"taken": taken, "words": words, "sidecars": sidecars, "pixels": pixels}
        if sha in by_sha:
            pending.append(_Pending(path, root, st.st_size, st.st_mtime, sha, [], same_as=by_sha[sha], **meta))
            continue
        reuse = store.reusable(sha, path)
        if reuse is not None:
            pending.append(_Pending(path, root, st.st_size, st.st_mtime, sha, reuse[0], vectors=reuse[1], **meta))
            continue
        result = extract(path, tokenize, options.chunk_tokens, options.chunk_overlap)
        if isinstance(result, list) and not model.supports_images:
            result = text_only(result, model.name)
        if isinstance(result, Skip):
            skipped.append(result)
            writes.append(lambda s=result, r=root, st=st: store.put_skip(s.path, r, st.st_size, st.st_mtime,
                                                                         s.reason, failed=s.failed))
            continue
        entry = _Pending(path, root, st.st_size, st.st_mtime, sha, result, **meta)
        pending.append(entry)
        by_sha[sha] = entry
        if sum(len(p.chunks) for p in pending) >= pace.items() or len(settled) >= 4 * options.flush_items:
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
        files_reread=reread,
    )


