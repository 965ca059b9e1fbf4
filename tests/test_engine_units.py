"""Engine pieces that need no model: chunking, fusion, prompts, metrics, settings, store, extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freeret_tui.engine.answer import citations
from freeret_tui.engine.chunking import chunk_text, word_spans
from freeret_tui.engine.evaluation import load_beir, metrics
from freeret_tui.engine.extract import extract
from freeret_tui.engine.fusion import convex, fuse, rrf
from freeret_tui.engine.prompts import (
    EMBED_SYSTEM,
    NOISE_LINE,
    TASK_LINE,
    Framing,
    Side,
    embedding_prompt,
    rerank_prompt,
)
from freeret_tui.engine.query import Query
from freeret_tui.engine.search import Searcher, SearchOptions
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, Content, Kind, Skip
from freeret_tui.errors import DatasetError, StoreError, UsageError
from freeret_tui.settings import load_settings


def test_chunks_respect_size_overlap_and_lines() -> None:
    text = "\n".join(f"line{n} " + "w " * 9 for n in range(1, 31))  # 30 lines of 10 words
    windows = chunk_text(text, word_spans, max_tokens=40, overlap=10)
    assert len(windows) == 10  # 300 words, step 30
    for w in windows:
        assert len(word_spans(text[w.start : w.end])) <= 40
    first, second = windows[0], windows[1]
    assert first.line_start == 1 and first.line_end == 4
    assert second.start < first.end  # overlapping
    assert text[second.start : second.start + 6] == "line4 "
    assert windows[-1].end == len(text.rstrip())
    assert chunk_text("   ", word_spans, 10, 2) == []
    with pytest.raises(ValueError):
        chunk_text(text, word_spans, 10, 10)


def test_convex_fusion_keeps_a_clear_lexical_winner() -> None:
    lexical = [(7, 12.0), (8, 3.0), (9, 2.5)]  # BM25: item 7 far ahead
    dense = [(9, 0.61), (8, 0.60), (7, 0.58)]  # weak dense side, nearly flat
    assert convex(dense, lexical, 0.2)[0][0] == 7
    assert [i for i, _ in convex(dense, [], 0.2)] == [9, 8, 7]  # no lexical hits: dense decides alone
    assert [i for i, _ in convex([], lexical, 0.2)] == [7, 8, 9]
    assert convex([(1, 0.5)], [], 0.2) == [(1, 1.0)]  # a single candidate is not scored 0


def test_fusion_does_not_hold_missing_words_against_a_photo() -> None:
    """A photo's only words in the full-text index are its file name: fusion scores its lexical side by its dense
    side, so the best match by meaning competes with notes that share a word with the query."""
    lexical = [(1, 9.0), (2, 6.0), (3, 5.0), (4, 4.0), (5, 1.0)]  # notes sharing a query word
    dense = [(50, 0.80), (51, 0.70), (2, 0.40), (1, 0.35), (3, 0.30)]  # 50, 51: photos
    photos = {50, 51}
    fused = [i for i, _ in convex(dense, lexical, 0.2, photos)]
    assert fused[:3] == [50, 1, 51] and fused.index(51) < fused.index(2)
    assert [i for i, _ in convex(dense, lexical, 0.2)][:4] == [1, 2, 3, 4]  # without: every note first
    # A photo is ranked by its meaning alone, not lifted above it: a note first by words and by meaning leads.
    assert [i for i, _ in convex([(1, 0.5), (50, 0.45), (2, 0.2)], [(1, 9.0), (2, 1.0)], 0.2, photos)] == [1, 50, 2]
    ranked = [i for i, _ in fuse("rrf", dense, lexical, 0.2, photos)]
    assert ranked.index(50) < ranked.index(2) and ranked.index(51) < ranked.index(3)
    assert [i for i, _ in fuse("rrf", dense, lexical, 0.2)][-2:] == [50, 51]  # without: after every note


def test_a_photo_whose_words_match_passes_the_photo_first_by_meaning() -> None:
    """Photos have words of their own (keywords, captions): one whose words match the query leads the photo first
    by meaning alone, whose words' side is only estimated — unless it is among the farthest by meaning."""
    photos = {60, 61, 62, 63}
    dense = [(60, 0.90), (61, 0.60), (62, 0.50), (63, 0.30)]
    assert [i for i, _ in convex(dense, [(61, 3.0)], 0.2, photos)][:2] == [61, 60]
    assert [i for i, _ in fuse("rrf", dense, [(61, 3.0)], 0.2, photos)][:2] == [61, 60]
    assert [i for i, _ in convex(dense, [(63, 3.0)], 0.2, photos)][:2] == [60, 63]  # the farthest by meaning


def test_a_photo_closest_by_meaning_is_among_the_hits_of_a_text_query(tmp_path: Path) -> None:
    """Through the store: a photo's kind makes fusion blind to its missing words (without that, the six notes
    that mention the query's word fill the three hits)."""
    rng = np.random.default_rng(1)
    store = Store(tmp_path / "index.db")
    store.bind_model("m", 8)
    query = _unit(rng, 8)
    for n in range(6):
        path = Path(f"/r/note{n}.txt")
        text = " ".join(["harbour"] * (n + 1) + ["boats", "tide", "rope"] * 3)
        store.put_file(path, Path("/r"), 10, 1.0, f"n{n}", [Chunk(path, Kind.TEXT, text, path.name)],
                       _unit(rng, 8)[None])
    photo = Path("/r/IMG_0042.jpg")
    near = query + 0.2 * _unit(rng, 8)
    store.put_file(photo, Path("/r"), 10, 1.0, "p", [Chunk(photo, Kind.IMAGE, "", photo.name)],
                   (near / np.linalg.norm(near))[None])

    class FixedQuery:  # the Searcher asks the model only for the query's vector here
        def embed(self, items: object, side: object, kinds: object = None, pooling: object = None) -> np.ndarray:
            return query[None]

    hits = Searcher(store, FixedQuery()).candidates(Query("harbour"), SearchOptions(k=3, rerank=False))  # type: ignore[arg-type]
    assert photo in [h.path for h in hits]
    store.close()


def test_rrf_weights_and_ties() -> None:
    fused = rrf({"dense": [1, 2, 3], "lexical": [3, 4]}, {"dense": 1.0, "lexical": 1.0})
    assert fused[0][0] == 3  # in both lists
    downweighted = rrf({"dense": [1, 2], "lexical": [5, 6]}, {"dense": 0.5, "lexical": 1.0})
    assert [i for i, _ in downweighted] == [5, 6, 1, 2]


def test_prompts_carry_the_freeret_priors() -> None:
    query = embedding_prompt(Content("red bike"), Side.QUERY)
    passage = embedding_prompt(Content("a text"), Side.CANDIDATE, Kind.TEXT)
    image = embedding_prompt(Content(image=Path("x.jpg")), Side.CANDIDATE, Kind.IMAGE)
    for p in (query, passage, image):
        assert TASK_LINE in p.text and NOISE_LINE in p.text and p.text.endswith("output one word:")
    assert "semantics of the query" in query.text and "semantics of the passage" in passage.text
    assert image.text.startswith("<image>") and image.images == (Path("x.jpg"),)
    assert query.system == passage.system == EMBED_SYSTEM
    mc = rerank_prompt(Content("q"), Content("c"), Framing.MC)
    assert "A. Yes, the candidate fully matches the query." in mc.text
    assert "B. No, the candidate does not match or only partially matches." in mc.text
    assert "Answer Yes or No" in rerank_prompt(Content("q"), Content("c"), Framing.YESNO).text
    # A literal image mark in a person's text never becomes an image slot.
    tricky = rerank_prompt(Content("what is <image>?"), Content(image=Path("a.png")), Framing.MC)
    assert tricky.text.count("<image>") == len(tricky.images) == 1
    # A photo's own words go beside it on the candidate's one line (the options stay on theirs).
    tagged = rerank_prompt(Content("q"), Content("Tram 28\nLisbon", image=Path("a.jpg")), Framing.MC)
    assert "\nCandidate: <image> Tram 28; Lisbon\nA. Yes" in tagged.text


def test_metrics_on_a_hand_computed_case() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    ranked = {"q1": ["x", "a"], "q2": ["b", "y", "c"]}
    m = metrics(ranked, qrels)
    assert m["recall@1"] == pytest.approx((0 + 0.5) / 2)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    ndcg_q1 = 1 / np.log2(3)
    ndcg_q2 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-4)


def test_beir_loader_reports_bad_files(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "title": "", "text": "t"}\n')
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "t"}\n{"_id": "q2", "text": "u"}\n')
    (tmp_path / "r.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    data = load_beir(tmp_path / "c.jsonl", tmp_path / "q.jsonl", tmp_path / "r.tsv")
    assert list(data.queries) == ["q1"]  # q2 has no judgement
    (tmp_path / "bad.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(DatasetError, match="header"):
        load_beir(tmp_path / "c.jsonl", tmp_path / "q.jsonl", tmp_path / "bad.tsv")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match="bad.jsonl:1"):
        load_beir(tmp_path / "bad.jsonl", tmp_path / "q.jsonl", tmp_path / "r.tsv")


def test_citations_are_distinct_and_in_range() -> None:
    assert citations("See [2] and [1], again [2]; not [9].", 3) == (2, 1)


def test_settings_layering(isolated_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolated_data_dir.mkdir(parents=True, exist_ok=True)
    (isolated_data_dir / "config.toml").write_text('model = "fast"\nrerank-k = 20\n')
    monkeypatch.setenv("FREERET_RERANK_K", "30")
    s = load_settings({"k": 5})
    assert (s.model, s.rerank_k, s.k) == ("fast", 30, 5)
    with pytest.raises(UsageError, match="mode"):
        load_settings({"mode": "fuzzy"})
    (isolated_data_dir / "config.toml").write_text("colour = 1\n")
    with pytest.raises(UsageError, match="unknown setting"):
        load_settings()


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_store_round_trip_replace_and_model_guard(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    store = Store(tmp_path / "index.db")
    store.bind_model("m", 8)
    chunks = [Chunk(Path("/r/a.txt"), Kind.TEXT, "red bicycle in the rain", "a.txt", line_start=1, line_end=2)]
    v = _unit(rng, 8)
    [item] = store.put_file(Path("/r/a.txt"), Path("/r"), 10, 1.0, "h", chunks, v[None])
    assert store.dense(v, 3)[0][0] == item
    assert store.dense(v, 3)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert store.lexical("bicycles", 3)[0][0] == item  # porter stemming
    # Replacing the file leaves exactly the new item behind, in all three tables.
    new = [Chunk(Path("/r/a.txt"), Kind.TEXT, "green tractor", "a.txt")]
    [item2] = store.put_file(Path("/r/a.txt"), Path("/r"), 11, 2.0, "h2", new, _unit(rng, 8)[None])
    assert store.lexical("bicycle", 3) == [] and [i for i, _ in store.dense(v, 5)] == [item2]
    assert store.counts() == {"indexed": 1, "items": 1}
    store.put_skip(Path("/r/b.png"), Path("/r"), 0, 0.0, "cannot decode image")
    assert store.skips() == [("/r/b.png", "cannot decode image")]
    store.close()
    reopened = Store(tmp_path / "index.db")
    with pytest.raises(StoreError, match="built with model 'm'"):
        reopened.bind_model("other", 8)
    reopened.remove_file(Path("/r/a.txt"))
    assert reopened.dense(v, 5) == [] and reopened.counts()["items"] == 0


def test_store_rolls_back_a_failed_write(tmp_path: Path) -> None:
    """vec0 refuses the vector only after the file, item and FTS rows of the new version are written: the whole
    replacement rolls back and the old version of the file stays searchable."""
    import apsw

    store = Store(tmp_path / "index.db")
    store.bind_model("m", 4)
    path = Path("/r/a.txt")
    store.put_file(path, Path("/r"), 1, 1.0, "old", [Chunk(path, Kind.TEXT, "zero")], np.ones((1, 4), np.float32))
    chunks = [Chunk(path, Kind.TEXT, "one"), Chunk(path, Kind.TEXT, "two")]
    bad = np.ones((2, 3), dtype=np.float32)  # wrong width: vec0 rejects the first insert
    with pytest.raises(apsw.SQLError, match="Dimension mismatch"):
        store.put_file(path, Path("/r"), 2, 2.0, "new", chunks, bad)
    assert store.counts() == {"indexed": 1, "items": 1} and store.lexical("one", 5) == []
    (kept, _), = store.lexical("zero", 5)
    assert store.items([kept])[kept].chunk.text == "zero" and len(store.dense(np.ones(4, np.float32), 5)) == 1


def test_extract_skips_bad_files_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("   \n")
    (tmp_path / "notes.md").write_bytes("caf\xe9 menu".encode("cp1252"))
    (tmp_path / "data.bin").write_bytes(b"\0")
    for name, reason in [("broken.jpg", "cannot decode"), ("empty.png", "cannot decode"), ("blank.txt", "no text"),
                         ("data.bin", "unsupported")]:
        result = extract(tmp_path / name, word_spans)
        assert isinstance(result, Skip) and reason in result.reason, (name, result)
    [chunk] = extract(tmp_path / "notes.md", word_spans)
    assert chunk.text == "café menu"


def _resident_mib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


def test_release_freed_hands_freed_heap_memory_back() -> None:
    """128 MiB malloc'd in 64 KiB blocks (below glibc's mmap threshold, so from the heap), touched, then freed but
    for the last block, which pins the heap's top: free() alone keeps it all resident; ``release_freed`` must
    hand it back."""
    import ctypes

    from freeret_tui.engine.models import heap

    if heap._trim() is None or not Path("/proc/self/status").exists():
        pytest.skip("no malloc_trim in this C library (glibc only)")
    libc = ctypes.CDLL(None)
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
    size = 64 * 1024
    blocks = [libc.malloc(size) for _ in range(2048)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks[:-1]:
        libc.free(block)
    held = _resident_mib()
    try:
        assert heap.release_freed()
        assert held - _resident_mib() > 100
    finally:
        libc.free(blocks[-1])


def test_transparent_images_are_read_on_white_and_avif_photos_are_read(tmp_path: Path, photos: Path) -> None:
    """Black writing on a transparent background (a signature, a diagram) is what a viewer shows, not a black
    square (the alpha channel dropped kept the black under it); AVIF and JFIF photos, as phones save them, are
    images."""
    from PIL import Image, ImageDraw

    from freeret_tui.engine.pictures import load_image

    signature = Image.new("RGBA", (240, 80), (0, 0, 0, 0))
    ImageDraw.Draw(signature).rectangle((20, 30, 220, 50), fill=(0, 0, 0, 255))  # the ink
    signature.save(tmp_path / "signature.png")
    signature.convert("P").save(tmp_path / "signature.gif", transparency=0)  # a palette image, index 0 clear
    for name in ("signature.png", "signature.gif"):
        pixels = np.asarray(load_image(tmp_path / name))
        assert pixels[5, 5].tolist() == [255, 255, 255] and pixels[40, 120].tolist() == [0, 0, 0], name
    photo = Image.open(photos / "coffee.png").convert("RGB")
    photo.save(tmp_path / "coffee.avif")
    photo.save(tmp_path / "coffee.jfif", format="JPEG")
    for name in ("coffee.avif", "coffee.jfif"):
        [chunk] = extract(tmp_path / name, word_spans)
        assert chunk.kind is Kind.IMAGE and load_image(tmp_path / name).size == photo.size, name
