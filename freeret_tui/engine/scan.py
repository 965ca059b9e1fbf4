"""Which files the index should hold: walking the watched folders, the rules for what is indexable, and the mark
and sweep that compares the folders with the store on (path, size, mtime). No model and no threads here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from freeret_tui.engine.extract import kind_of
from freeret_tui.engine.sidecars import sidecar_state
from freeret_tui.engine.store import Store

# Folders nobody searches their own files in (hidden folders, ".git", ".cache", …, are always skipped); the
# settings' `exclude` list replaces this one.
DEFAULT_EXCLUDE = ("node_modules", "__pycache__", "venv", "site-packages", "$RECYCLE.BIN")
JUNK_DIRS = frozenset(DEFAULT_EXCLUDE)
# Vectors of removed files are kept this long, so a file moved out of and back into a watched folder, or moved
# while nothing watched, is recognised by its content hash instead of embedded again.
TRASH_SECONDS = 24 * 3600


def _hidden(root: Path, path: Path, exclude: frozenset[str]) -> bool:
    """Whether ``path`` is hidden or in a junk folder, judged from ``root`` down; False outside ``root``."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True
    return any(part.startswith(".") for part in parts) or any(part in exclude for part in parts[:-1])


def indexable(root: Path, path: Path, exclude: frozenset[str] = JUNK_DIRS) -> bool:
    """Whether ``path`` (under ``root``) is a file freeret-tui indexes: known type, not hidden, not in junk."""
    return not _hidden(root, path, exclude) and kind_of(path) is not None


def walk(roots: Iterable[Path], exclude: frozenset[str] = JUNK_DIRS) -> Iterator[tuple[Path, Path]]:
    """(root, file) for every indexable file under the roots; symlinked folders are not followed (no loops).

    A folder that cannot be listed (no permission, a path longer than PATH_MAX) is yielded too, in place of the
    files it holds: the indexer records why, so nothing found is left unaccounted for.
    """
    for root in roots:
        root = root.expanduser().resolve()
        if root.is_file():
            if kind_of(root) is not None:
                yield root.parent, root
            continue
        unlisted: list[OSError] = []
        for folder, dirs, files in os.walk(root, onerror=unlisted.append):
            yield from ((root, Path(err.filename)) for err in unlisted if err.filename is not None)
            unlisted.clear()
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in exclude)
            for name in sorted(files):
                if not name.startswith(".") and kind_of(Path(name)) is not None:
                    yield root, Path(folder, name)
        yield from ((root, Path(err.filename)) for err in unlisted if err.filename is not None)


def newest_first(files: Iterable[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """(root, path) pairs, the most recently modified first (what a person searches for first); a path that
    cannot be stat'ed goes first too, to be recorded at once."""
    def mtime(pair: tuple[Path, Path]) -> float:
        try:
            return pair[1].stat().st_mtime
        except OSError:
            return float("inf")

    return sorted(files, key=mtime, reverse=True)


def reconcile(store: Store, root: Path, exclude: frozenset[str] = JUNK_DIRS) -> list[tuple[Path, Path]]:
    """Mark and sweep one root against the store: (root, path) of every file added, changed or gone since the
    index last saw it, judged on (size, mtime), and an indexed photo on its sidecars too (sidecars.py: six stats
    more a photo, ~13 µs; 0.13 s a scan of 10k photos, a throwaway timing). What inotify missed (overflow, a
    daemon that was not running) is found here; the content hash later tells a moved file from a new one."""
    stored = store.file_states(root)
    changed: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for _, path in walk([root], exclude):
        key = str(path)
        seen.add(key)
        try:
            st = path.stat()
        except OSError:
            changed.append((root, path))  # let the indexer record why it cannot be read
            continue
        known = stored.get(key)
        if known is None or known[:2] != (st.st_size, st.st_mtime) or (
                known[2] is not None and known[2] != sidecar_state(path)):
            changed.append((root, path))
    changed += [(root, Path(p)) for p in stored if p not in seen]
    return changed


def under(root: Path, folder: Path, exclude: frozenset[str] = JUNK_DIRS) -> list[tuple[Path, Path]]:
    """What ``walk`` finds in ``folder``, a folder inside ``root``: nothing if the folder itself is hidden or junk
    as seen from ``root``."""
    if _hidden(root, folder / "_", exclude):
        return []
    return [(root, path) for _, path in walk([folder], exclude)]


def sweep(store: Store, roots: Iterable[Path], present: Iterable[Path]) -> int:
    """Remove stored files under ``roots`` that are no longer on disk; returns how many went."""
    keep = {str(p) for p in present}
    gone = [p for p in store.paths_under([r.expanduser().resolve() for r in roots]) if p not in keep]
    with store.transaction():
        for path in gone:
            store.remove_file(Path(path))
        store.purge_trash(time.time() - TRASH_SECONDS)
    return len(gone)
