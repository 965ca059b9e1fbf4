"""End to end through the CLI with a tiny random Idefics3: index a real folder, search, ask, evaluate.

A random model ranks nothing meaningfully, so these tests check plumbing and contracts (what is indexed, what
is skipped, JSON shapes, stage scores, fusion and rerank order rules), not relevance; relevance is the
real-weights tests' job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from freeret_tui.cli import main


@pytest.fixture()
def folder(tmp_path: Path, photos: Path) -> Path:
    notes = photos / "notes"
    notes.mkdir()
    (notes / "trip.md").write_text("# Lisbon trip\n\nWe ate pastel de nata near the river.\n" + "tram 28 " * 300)
    (notes / "recipe.txt").write_text("Sourdough bread: flour, water, salt and a lively starter.\n")
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (photos / ".hidden").mkdir()
    (photos / ".hidden" / "secret.txt").write_text("never indexed")
    return photos


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_search_ask_with_a_tiny_vlm(folder: Path, tiny_dirs: dict[str, Path], capsys) -> None:
    model = str(tiny_dirs["idefics3"])
    code, out, err = _run(capsys, "index", str(folder), "--model", model, "--chunk-tokens", "64",
                          "--chunk-overlap", "8")
    assert code == 0, err
    assert "this run: 10 indexed" in out and "1 not indexed" in out and "corrupt.jpg" in out  # 8 photos + 2 notes
    assert "files/s" in err and " left" in err  # progress line

    code, out, err = _run(capsys, "search", "pastel de nata", "--json", "--k", "5", "--rerank-k", "3")
    assert code == 0, err
    result = json.loads(out)
    hits = result["hits"]
    assert result["reranked"] is True and len(hits) == 5
    paths = [h["path"] for h in hits]
    assert str(folder / "notes" / "trip.md") in paths  # the lexical side finds the exact phrase
    trip = next(h for h in hits if h["path"].endswith("trip.md") and h["lexical_score"] is not None)
    assert trip["location"].startswith("lines 1-")
    probs = [h["rerank_prob"] for h in hits[:3]]
    assert all(p is not None for p in probs) and probs == sorted(probs, reverse=True)
    assert all(h["rerank_prob"] is None for h in hits[3:])
    assert not any("secret" in p for p in paths)

    # Re-indexing an unchanged folder embeds nothing again (the known-bad file is not retried until it changes).
    code, out, _ = _run(capsys, "index", str(folder), "--model", model)
    assert "0 indexed, 11 unchanged" in out

    # A deleted file disappears from the index on the next run.
    (folder / "notes" / "recipe.txt").unlink()
    code, out, _ = _run(capsys, "index", str(folder), "--model", model)
    assert "1 removed" in out
    _, out, _ = _run(capsys, "search", "sourdough", "--json", "--mode", "lexical", "--no-rerank")
    assert json.loads(out)["hits"] == []

    # Search by image, dense only (an image query has no words for the lexical side).
    code, out, err = _run(capsys, "search", "--image", str(folder / "chelsea.png"), "--json", "--no-rerank",
                          "--mode", "dense")
    assert code == 0, err
    image_hits = json.loads(out)["hits"]
    assert image_hits and all(h["dense_score"] is not None for h in image_hits)

    code, out, err = _run(capsys, "ask", "What did we eat in Lisbon?", "--json", "--rerank-k", "2")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["answer"].strip() and len(answer["sources"]) == 5
    # The citations reported are exactly the in-range [n] the text holds (the fake-model tier checks a real one).
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", answer["answer"]) if 1 <= int(n) <= 5]
    assert answer["citations"] == list(dict.fromkeys(cited))


def test_index_refuses_a_different_model(folder: Path, tiny_dirs: dict[str, Path], capsys) -> None:
    notes = str(folder / "notes")
    assert _run(capsys, "index", notes, "--model", str(tiny_dirs["idefics3"]))[0] == 0
    code, _, err = _run(capsys, "index", notes, "--model", str(tiny_dirs["gemma3"]))
    assert code == 1 and "built with model" in err and "--reindex" in err
    code, out, err = _run(capsys, "index", notes, "--model", str(tiny_dirs["gemma3"]), "--reindex")
    assert code == 0, err


def test_eval_prints_every_mode_as_json(tmp_path: Path, tiny_dirs: dict[str, Path], capsys) -> None:
    docs = ["red bicycle in the rain", "a cup of coffee on a saucer", "rocket launch at dawn", "old coins"]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q0", "text": "bicycle"}) + "\n" + json.dumps({"_id": "q1", "text": "coffee cup"}) + "\n"
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    code, out, err = _run(
        capsys, "eval", "--corpus", str(tmp_path / "corpus.jsonl"), "--queries", str(tmp_path / "queries.jsonl"),
        "--qrels", str(tmp_path / "qrels.tsv"), "--model", str(tiny_dirs["gemma3"]), "--pooling", "premlp,last",
        "--mode", "lexical,dense,hybrid", "--framing", "mc,yesno", "--rerank-k", "3", "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    configs = {(r["mode"], r["pooling"], r["rerank"]) for r in report["runs"]}
    assert ("lexical", None, None) in configs
    for pooling in ("premlp", "last"):
        assert {("dense", pooling, None), ("hybrid", pooling, None)} <= configs
    # Rerank rows: on hybrid candidates only (the default), with the first pooling only.
    assert {c for c in configs if c[2]} == {("hybrid", "premlp", "mc"), ("hybrid", "premlp", "yesno")}
    lexical = next(r for r in report["runs"] if r["mode"] == "lexical" and r["rerank"] is None)
    assert lexical["recall@1"] == 1.0  # both queries share a word with exactly their passage
    for r in report["runs"]:
        assert set(r) >= {"ndcg@10", "recall@1", "recall@10", "mrr@10", "ms_per_query"}
