"""How a file path is kept in the index. SQLite text must be valid UTF-8, but a file name is any bytes (an old
Latin-1 archive, a camera card): Python reads such a name with the bad bytes as lone surrogates, which apsw
cannot bind. Such a path is stored as a BLOB of its raw bytes, every other path as TEXT, so both kinds are kept
exactly, compare exactly (a BLOB never equals a TEXT), and come back as the same ``str`` the filesystem gave.
"""

from __future__ import annotations

import os
from pathlib import Path


def path_key(path: Path | str) -> str | bytes:
    """The value a path is stored and looked up as: its text, or its raw bytes when those are not UTF-8."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def path_text(value: str | bytes) -> str:
    """A stored path back as the filesystem's ``str`` (undecodable bytes as surrogates, as ``os.fsdecode``)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def prefix_bytes(prefix: Path | str) -> bytes:
    """A folder prefix as bytes, to compare with ``substr(CAST(path AS BLOB), …)`` whatever a path is kept as."""
    return os.fsencode(str(prefix))
