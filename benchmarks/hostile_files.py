"""What a hostile file costs the indexer: generates bombs and oversized files, extracts each in a fresh process
(what the indexer does before the model: a photo's date, decode, read text, chunk; then each image and scanned page decoded or
rendered again, as embedding does), and prints one JSON object with each file's peak RSS above the process's
baseline, seconds, and outcome (chunks, or the skip reason).

    python benchmarks/hostile_files.py [--keep DIR]

Target (issue 16): no file adds more than 500 MB RSS or takes more than 10 s to be accepted or skipped. Chunking
here uses whitespace words for tokens (the same spans code path as a model's tokenizer, no model loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

TARGET_MB, TARGET_S = 500, 10.0

_MEASURE = """
import json, resource, sys, time
from pathlib import Path
from freeret_tui.engine.chunking import word_spans
from freeret_tui.engine.extract import extract
from freeret_tui.engine.photo_meta import taken_at
from freeret_tui.engine.types import Skip
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
taken_at(Path(sys.argv[1]))  # the indexer reads a photo's date before extracting it
result = extract(Path(sys.argv[1]), word_spans, 256, 32)
if not isinstance(result, Skip):  # what embedding adds: each image and scanned page decoded or rendered again
    from freeret_tui.engine.pictures import load_image_or_reason
    reasons = [r for c in result if c.content().image is not None
               for r in [load_image_or_reason(c.content().image)] if isinstance(r, str)]
    result = Skip(Path(sys.argv[1]), "at embedding: " + reasons[0]) if reasons else result
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": round(seconds, 2), "added_rss_mb": round((peak - base) / 1024, 1),
                  "outcome": result.reason if isinstance(result, Skip) else f"{len(result)} chunks"}))
"""


def _deflated(path: Path, name: str, size: int, fill: bytes = b"\0") -> None:
    """A zip member of ``size`` bytes of ``fill`` without holding it in memory (a zip bomb for DOCX)."""
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w", force_zip64=True) as f:
        block = fill * (1 << 20)
        for _ in range(size >> 20):
            f.write(block)


def docx_bomb(path: Path, inflated: int) -> Path:
    """A DOCX whose document.xml inflates to ``inflated`` bytes of one endless paragraph's text."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", (
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'wordprocessingml.document.main+xml"/></Types>'))
        archive.writestr("_rels/.rels", (
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="r1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'officeDocument" Target="word/document.xml"/></Relationships>'))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("word/document.xml", "w", force_zip64=True) as f:
        f.write(b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/'
                b'2006/main"><w:body><w:p><w:r><w:t>')
        block = b"bomb " * (1 << 18)
        for _ in range(inflated // len(block)):
            f.write(block)
        f.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return path


def pdf_bomb(path: Path, inflated: int) -> Path:
    """A one-page PDF whose content stream inflates to ``inflated`` bytes of spaces."""
    compressor = zlib.compressobj(9)
    stream = b"".join(compressor.compress(b" " * (1 << 20)) for _ in range(inflated >> 20)) + compressor.flush()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def png_bomb(path: Path, side: int) -> Path:
    from PIL import Image

    Image.new("L", (side, side), 0).save(path, optimize=False)
    return path


def text_file(path: Path, size: int, unit: bytes) -> Path:
    with path.open("wb") as f:
        block = unit * ((1 << 20) // len(unit))
        for _ in range(max(1, size // len(block))):
            f.write(block)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the files here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="hostile-"))
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "docx inflating to 1 GB": docx_bomb(folder / "bomb.docx", 1 << 30),
        "PDF with a 1 GB Flate stream": pdf_bomb(folder / "bomb.pdf", 1 << 30),
        "PNG 14000x14000": png_bomb(folder / "huge.png", 14_000),
        "200 MB text": text_file(folder / "big.txt", 200 << 20, b"lorem ipsum dolor sit amet "),
        "1 MB of newlines": text_file(folder / "newlines.txt", 1 << 20, b"\n"),
        "3 MB of random bytes named .txt": text_file(folder / "noise.txt", 3 << 20, os.urandom(1 << 20)),
        "200 MB HTML of nested tags": text_file(folder / "page.html", 200 << 20, b"<div><p>lorem <b>ipsum</b> "),
    }
    rows = []
    for what, path in files.items():
        proc = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True,
                              timeout=600)
        row = {"file": what, "bytes_on_disk": path.stat().st_size}
        if proc.returncode == 0:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        row["within_target"] = proc.returncode == 0 and row["added_rss_mb"] <= TARGET_MB and row["seconds"] <= TARGET_S
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps({"target": {"added_rss_mb": TARGET_MB, "seconds": TARGET_S}, "files": rows,
                      "all_within_target": all(r["within_target"] for r in rows)}))


if __name__ == "__main__":
    main()
