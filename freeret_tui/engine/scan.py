"""Which files the index should hold: walking the watched folders, the rules for what is indexable, and the mark
and sweep that compares the folders with the store on (path, size, mtime). No model and no threads here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from freeret_tui.engine.extract import kind_of
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Skip

# Folders nobody searches their own files in (hidden folders, ".git", ".cache", …, are always skipped); the
# settings' `exclude` list replaces this one.
DEFAULT_EXCLUDE = ("node_modules", "__pycache__", "venv", "site-packages", "$RECYCLE.BIN")
JUNK_DIRS = frozenset(DEFAULT_EXCLUDE)
# Vectors of removed files are kept this long, so a file moved out of and back into a watched folder, or moved
# while nothing watched, is recognised by its content hash instead of embedded again.
TRASH_SECONDS = 24 * 3600


def indexable(root: Path, path: Path, exclude: frozenset[str] = JUNK_DIRS) -> bool:
    """Whether ``path`` (under ``root``) is a file freeret-tui indexes: known type, not hidden, not in junk."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    if any(part.startswith(".") for part in parts) or any(part in exclude for part in parts[:-1]):
        return False
    return kind_of(path) is not None and encodable(str(path))


def undecodable_name(name: str | Path) -> Skip:
    """The recorded reason for a file whose name is not valid UTF-8, its bytes shown as escapes."""
    shown = os.fsencode(name).decode("utf-8", "backslashreplace")
    return Skip(Path(shown), "file name is not valid UTF-8; rename it to index it", True)


def encodable(name: str) -> bool:
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
                if not encodable(str(path)):
                    if on_skip:
                        on_skip(undecodable_name(path))
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


def sweep(store: Store, roots: Iterable[Path], present: Iterable[Path]) -> int:
    """Remove stored files under ``roots`` that are no longer on disk; returns how many went."""
    keep = {str(p) for p in present}
    gone = [p for p in store.paths_under([r.expanduser().resolve() for r in roots]) if p not in keep]
    with store.transaction():
        for path in gone:
            store.remove_file(Path(path))
        store.purge_trash(time.time() - TRASH_SECONDS)
    return len(gone)
