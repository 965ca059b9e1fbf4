"""The files a photo manager writes beside a photo instead of into it: XMP sidecars (darktable, digiKam, Lightroom,
RawTherapee: ``IMG_1.jpg.xmp`` or ``IMG_1.xmp``) and Google Takeout's JSON (``IMG_1.jpg.json``, and since 2024
``IMG_1.jpg.supplemental-metadata.json``, cut to 51 characters). Which ones a photo has, a fingerprint of them that
tells the index when one was written, added or removed, and which photos a changed sidecar belongs to. No parsing:
what they say is photo_meta.py's.

A sidecar is never indexed itself: its photo is, and a sidecar's change re-reads that photo's words and date
without running the model.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from freeret_tui.engine.pictures import IMAGE_EXTENSIONS

# Takeout cuts a sidecar's name to this many characters before ".json" (51 in all), the photo's own name included:
# "Screenshot_2017-07-05-10-05-26.png.supplementa.json", "Urlaub in Knaufspesch in der Schneifel (38).JP.json".
_TAKEOUT_CUT = 46
SIDECAR_SUFFIXES = (".xmp", ".json")
# What Google Photos appends to an edited copy's name, in the languages Takeout exports most (the copy has no JSON
# of its own).
_EDITED = ("-edited", "-bearbeitet", "-modifié", "-editado", "-modificato", "-bewerkt", "-redigerad", "-muokattu")
_NUMBERED = re.compile(r"(.*[^ ])(\(\d+\))")  # "IMG(1)", not "Holiday (38)", a name of its own
# A sidecar larger than this is not read (an XMP sidecar is a few KB, a Takeout JSON under one).
MAX_SIDECAR_BYTES = 1 << 20


def sidecar_names(name: str) -> tuple[str, ...]:
    """The names a sidecar of the photo named ``name`` may have, in the order they are read."""
    stem = name.rpartition(".")[0] or name
    names = (f"{name}.xmp", f"{name}.XMP", f"{stem}.xmp", f"{stem}.XMP", *_takeout_names(name))
    return tuple(dict.fromkeys(names))


def _takeout_names(name: str, number: str = "") -> list[str]:
    """Takeout's names for the JSON of the photo named ``name``: ``name.supplemental-metadata.json`` or
    ``name.json``, cut to 51 characters; a second photo of the same name, ``IMG(1).jpg``, has ``IMG.jpg(1).json``
    (the number after the cut); an edit saved by Google Photos, ``IMG-edited.jpg``, shares its original's."""
    stem, dot, suffix = name.rpartition(".")
    cut = _TAKEOUT_CUT - len(number)
    names = [f"{name}.supplemental-metadata"[:cut] + f"{number}.json", name[:cut] + f"{number}.json"]
    if not stem:
        return names
    lower = stem.lower()
    if lower.endswith(_EDITED):  # one test first: a scan asks this of every photo
        edited = next(e for e in _EDITED if lower.endswith(e))
        names += _takeout_names(stem[: -len(edited)] + dot + suffix, number)
    numbered = _NUMBERED.fullmatch(stem) if not number and stem.endswith(")") else None
    if numbered:
        names += _takeout_names(numbered[1] + dot + suffix, numbered[2])
    return names


def sidecars(path: Path) -> list[tuple[Path, os.stat_result]]:
    """The sidecars beside a photo, each with its stat: regular files only (a link or a FIFO named like one is not
    followed: reading a FIFO would wait for ever); none for a file that is no photo."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return []
    folder = os.path.dirname(path)
    found = []
    for name in sidecar_names(path.name):
        try:
            st = os.lstat(os.path.join(folder, name))  # strings, not Paths: a scan asks this of every photo
        except OSError:  # mostly: there is none
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((path.with_name(name), st))
    return found


def sidecar_state(path: Path) -> str:
    """A fingerprint of a photo's sidecars (names, sizes, modification times): "" when it has none. The index keeps
    it beside the photo's own size and time, so that writing, adding or removing a sidecar is a change."""
    return ";".join(f"{p.name}:{st.st_size}:{st.st_mtime_ns}" for p, st in sidecars(path))


def is_sidecar(path: Path) -> bool:
    """Whether a changed file may be some photo's sidecar (by its name alone)."""
    return path.suffix.lower() in SIDECAR_SUFFIXES


def photos_beside(folder: Path, names: Iterable[str]) -> list[Path]:
    """The photos in ``folder`` that files named ``names`` are sidecars of. One listing of the folder for all of
    them: a Takeout archive unpacked into a folder sends a sidecar's event for every photo in it."""
    wanted = set(names)
    try:
        entries = list(os.scandir(folder))
    except OSError:  # the folder went meanwhile: nothing of it to re-read
        return []
    return sorted(Path(e.path) for e in entries if Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
                  and wanted.intersection(sidecar_names(e.name)) and e.is_file())
