"""Builds a small real labelled retrieval set in BEIR format from Python's standard-library docstrings.

Nobody here wrote this text. Each module whose docstring has a one-line summary and a body of at least
``min_words`` words gives one query (the summary line) and one passage (the body, cut at ``max_words``); the
qrels pair them. The
passage never contains its own summary line, so lexical overlap is natural, not copied.

    python benchmarks/stdlib_beir.py OUT_DIR [--limit N]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import sysconfig
from pathlib import Path


def _docstring(path: Path) -> str | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return ast.get_docstring(tree)


def build(out: Path, limit: int = 200, min_words: int = 25, max_words: int = 100) -> Path:
    """Write corpus.jsonl, queries.jsonl and qrels.tsv under ``out``; modules taken in sorted name order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pairs: list[tuple[str, str, str]] = []
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/__init__.py")):
        name = path.stem if path.name != "__init__.py" else path.parent.name
        if name.startswith("_") or name in {"this", "antigravity"}:
            continue
        doc = _docstring(path)
        if not doc:
            continue
        head, _, body = doc.partition("\n")
        head, body = head.strip().rstrip("."), " ".join(body.split())
        if len(head.split()) < 3 or len(body.split()) < min_words:
            continue
        # Passages are cut at max_words: a 135M model on 2 CPU cores embeds ~2 passages/s at this length.
        pairs.append((name, head, " ".join(body.split()[:max_words])))
    pairs = pairs[:limit]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for name, _head, body in pairs:
            f.write(json.dumps({"_id": f"d-{name}", "title": "", "text": body}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for name, head, _body in pairs:
            f.write(json.dumps({"_id": f"q-{name}", "text": head}) + "\n")
    with (out / "qrels.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for name, _head, _body in pairs:
            f.write(f"q-{name}\td-{name}\t1\n")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    build(args.out, args.limit)
    pairs = sum(1 for _ in (args.out / "qrels.tsv").open()) - 1
    print(f"wrote {pairs} query/passage pairs to {args.out}", file=sys.stderr)
