"""Bad files made in the test reach the indexer and come out as recorded skips with reasons, never a crash."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from freeret_tui.engine.chunking import word_spans
from freeret_tui.engine.extract import extract
from freeret_tui.engine.indexer import index_files
from freeret_tui.engine.scan import walk
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Skip


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` pixels (a decompression bomb's header) with one empty IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_broken_images_and_documents_are_recorded_skips(tmp_path: Path, photos: Path, idefics3) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    good = (photos / "rocket.jpg").read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2 - 1000])
    (folder / "bomb.png").write_bytes(png_header_only(40_000, 40_000))
    (folder / "not-an-image.png").write_text("plain text wearing a .png name")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    (folder / "loop-a.txt").symlink_to(folder / "loop-b.txt")  # a symlink loop between two names
    (folder / "loop-b.txt").symlink_to(folder / "loop-a.txt")
    (folder / "cycle").symlink_to(folder)  # a folder loop: walking must not follow it
    (folder / "fine.txt").write_text("One good note among the broken ones.\n")

    found = [p for _, p in walk([folder])]
    assert len(found) == 9 and not any("cycle" in str(p) for p in found)
    store = Store(tmp_path / "index.db")
    stats = index_files(store, idefics3, [(folder, p) for p in found])
    reasons = {s.path.name: s.reason for s in stats.skipped}
    assert stats.files_indexed == 1  # fine.txt
    expected = {
        "empty.jpg": "cannot decode image",
        "truncated.jpg": "image file is truncated",  # half-synced: indexed once its mtime changes
        "bomb.png": "cannot decode image",
        "not-an-image.png": "cannot decode image",
        "empty.txt": "no text",
        "broken.docx": "cannot decode DOCX",
        "loop-a.txt": "cannot read",
        "loop-b.txt": "cannot read",
    }
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons[name])
    assert "exceeds limit" in reasons["bomb.png"]
    assert "symbolic links" in reasons["loop-a.txt"]
    recorded = dict(store.skips())
    assert {Path(p).name for p in recorded} == set(expected)


def test_a_truncated_jpeg_is_a_recorded_failure_not_a_crash(tmp_path: Path, photos: Path) -> None:
    """Cut in its header, its first scan or a third of the way through: each is a failed Skip with the reason
    (half a photo is not indexed as if it were the photo)."""
    data = (photos / "rocket.jpg").read_bytes()
    for cut in (10, 200, len(data) // 3):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(data[:cut])
        result = extract(path, word_spans)
        assert isinstance(result, Skip) and result.failed, (cut, result)
        assert "cannot decode image" in result.reason and "runcated" in result.reason


def _extract_as_nobody(path: Path) -> str:
    """The skip reason ``extract`` gives when run as the unprivileged user ``nobody`` (root reads anything)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only drops privileges and reads; everything it needs is already imported
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = extract(path, word_spans)
            os.write(write, (result.reason if isinstance(result, Skip) else "indexed").encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as out:
        return out.read()


def test_a_permission_denied_file_is_a_recorded_failure(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir()
    secret = folder / "secret.txt"
    secret.write_text("not for you")
    secret.chmod(0)
    if os.geteuid() != 0:
        result = extract(secret, word_spans)
        reason = result.reason if isinstance(result, Skip) else "indexed"
    else:  # root reads anything: read as `nobody` instead, through world-traversable folders
        for parent in [folder, *folder.parents][:-1]:  # every folder up to / (excluded) traversable by others
            parent.chmod(parent.stat().st_mode | 0o011)
        reason = _extract_as_nobody(secret)
    assert "cannot read: Permission denied" in reason
