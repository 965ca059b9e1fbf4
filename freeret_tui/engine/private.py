"""Files in the data dir that only their owner may read: the index holds the text of the person's documents, and
the daemon's log and lock name their files and folders."""

from __future__ import annotations

import os
from pathlib import Path


def open_private(path: Path | str, flags: int) -> int:
    """``os.open`` with the file created 0600, and made 0600 if an earlier version (or a umask) left it readable by
    others."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return fd
