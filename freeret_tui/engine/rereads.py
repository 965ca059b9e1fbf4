"""Reading indexed photos' dates and words again with no model: neither is part of a vector (photo_meta.py). Once for
an index made before they were read (the schema's migrations ask for it), and for photos whose sidecars were
written, added or removed while the photo itself stayed as it was (``index`` loads no model for those).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from freeret_tui.engine.photo_meta import photo_meta
from freeret_tui.engine.pictures import IMAGE_EXTENSIONS
from freeret_tui.engine.sidecars import sidecar_state
from freeret_tui.engine.store import Store


def reread_photos(store: Store, batch: int = 200) -> int:
    """Once per index made before photos' dates and own words were read (schemas 5 and 6): read them for every indexed
    photo, headers only, with no model (neither is part of a vector), ``batch`` photos a transaction; a photo
    that is not there now gets them when it is indexed again. Returns how many were read."""
    paths = store.photos_to_reread()
    if paths is None:
        return 0
    present = [p for p in paths if p.is_file()]
    for start in range(0, len(present), batch):
        with store.transaction():
            for path in present[start : start + batch]:
                store.set_photo_meta(path, *photo_meta(path), sidecar_state(path))
    store.photos_reread()
    return len(present)


def reread_sidecars(store: Store, files: Sequence[tuple[Path, Path]], batch: int = 200) -> int:
    """Indexed photos whose sidecars were written, added or removed while the photo itself stayed as it was: their
    words and dates read again, with no model (``index`` loads none when no file's own bytes changed, so a keyword
    added in darktable would otherwise wait for the daemon), ``batch`` a transaction. Returns how many."""
    stale: list[tuple[Path, str]] = []
    for _root, path in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        row = store.file_row(path)
        if row is None or row.status != "indexed" or row.sidecars == (state := sidecar_state(path)):
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        if (row.size, row.mtime) == (st.st_size, st.st_mtime):  # else the photo changed: index_files reads it
            stale.append((path, state))
    for start in range(0, len(stale), batch):
        with store.transaction():
            for path, state in stale[start : start + batch]:
                store.set_photo_meta(path, *photo_meta(path), state)
    return len(stale)
