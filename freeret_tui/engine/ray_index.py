"""``freeret-tui index --ray ADDRESS FOLDER…``: the first index of a big library as a Ray Data pipeline.

    driver: walk, skip what the index already has ─→ extract (CPU actors, on the driver's node, where the files
    are) ─→ embed (model actors: GPUs, or CPUs) ─→ driver: one writer commits through the store's transactions

Extraction does what ``indexer.index_files`` does per file (the same checks, hashes, chunks and skip reasons) and
sends pictures as pixels (``EncodedImage``), so the model actors never open a path. The writer commits every
``flush_items`` items in one transaction: a re-run skips what is committed (size and mtime, as the daemon does),
and content already in the index (a copy, a move) reuses its vectors instead of running the model. Ray Data
restarts a killed actor and retries its batch; a batch's rows reach the writer once, so nothing is lost or stored
twice. The daemon then follows changes as usual.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from freeret_tui.engine.extract import extract
from freeret_tui.engine.indexer import (
    IndexOptions,
    Progress,
    cannot_stat,
    missing_target,
    not_followed,
    sha256_of,
    text_only,
)
from freeret_tui.engine.models.processors import DEFAULT_IMAGE_MAX_PIXELS
from freeret_tui.engine.models.wire import identity
from freeret_tui.engine.photo_meta import photo_meta, pixels_digest
from freeret_tui.engine.pictures import encode_image
from freeret_tui.engine.prompts import Side
from freeret_tui.engine.rereads import reread_photos
from freeret_tui.engine.scan import indexable, newest_first, sweep, walk
from freeret_tui.engine.sidecars import sidecar_state
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Chunk, IndexStats, Kind, Skip
from freeret_tui.errors import StoreError

# Files per extraction call, and items per model-actor call (a GPU fills its batches from these).
EXTRACT_BATCH = 16
EMBED_BATCH = 64


@dataclass(frozen=True)
class RayIndexOptions:
    """The model the actors load (as ``load_model`` takes it) and how many of each kind of worker."""

    model: str
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 0
    image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS
    embed_actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    extract_workers: int = 1


class Extractor:
    """A Ray Data worker: one batch of files to rows of what the writer needs (chunks, pixels, or why not)."""

    def __init__(self, spec: str, image_max_pixels: int, options: IndexOptions, known: frozenset[str]) -> None:
        from freeret_tui.engine.models.reader import model_facts, token_spans_with

        facts = model_facts(spec, image_max_pixels)
        self.name, self.supports_images, tok = facts.name, facts.supports_images, facts.tokenizer
        self.tokenize: Callable[[str], list[tuple[int, int]]] = lambda text: token_spans_with(tok, text)
        self.options = options
        self.known = known  # content hashes the index holds vectors for: nothing to extract or embed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        columns = zip(batch["root"], batch["path"], batch["stored_sha"], batch["stored_pixels"], strict=True)
        rows = [self._one(Path(os.fsdecode(root)), Path(os.fsdecode(path)), sha, pixels)
                for root, path, sha, pixels in columns]
        return {key: [row[key] for row in rows] for key in _COLUMNS}

    def _one(self, root: Path, path: Path, stored_sha: str, stored_pixels: str) -> dict[str, Any]:
        row = {"root": os.fsencode(root), "path": os.fsencode(path), "size": 0, "mtime": 0.0, "taken": 0.0, "words": "",
               "sidecars": "", "pixels": "", "sha": "", "action": "skip", "reason": "", "failed": False, "chunks": b"",
               "contents": b"", "vectors": b"", "model": ""}
        try:
            st: os.stat_result | None = path.stat()
        except FileNotFoundError:
            st, skip = None, missing_target(path)
        except OSError as err:
            st, skip = None, cannot_stat(path, err)
        else:
            skip = not_followed(root, path, st)
        if st is not None:
            row.update(size=st.st_size, mtime=st.st_mtime)
        if skip is None and (st is None or not indexable(root, path, self.options.exclude)):
            return {**row, "action": "gone"}
        if skip is None:
            try:
                row["sha"] = sha256_of(path)
            except OSError as err:
                skip = Skip(path, f"cannot read: {err.strerror or err}", failed=True)
        if skip is None:  # a photo's date, words and pixels are this path's (its sidecars), also for a touch or a copy
            taken, words = photo_meta(path)
            # 0.0 and "": none (a column travels without nulls)
            row.update(taken=taken or 0.0, words=words, sidecars=sidecar_state(path), pixels=pixels_digest(path) or "")
        if skip is None and (row["sha"] == stored_sha or (stored_pixels and row["pixels"] == stored_pixels)):
            return {**row, "action": "touch"}  # the same content, or the same pixels with other metadata
        if skip is None and row["sha"] in self.known:
            return {**row, "action": "reuse"}
        if skip is None:
            result = extract(path, self.tokenize, self.options.chunk_tokens, self.options.chunk_overlap)
            if isinstance(result, list) and not self.supports_images:
                result = text_only(result, self.name)
            if isinstance(result, Skip):
                skip = result
            else:
                try:  # pictures travel as their pixels: the model's node needs no access to these files
                    contents = [c if c.image is None else replace(c, image=encode_image(c.image))
                                for c in (chunk.content() for chunk in result)]
                except Exception as err:  # noqa: BLE001 - PIL and pdfium raise many types for broken files
                    skip = Skip(path, f"cannot read it to embed: {type(err).__name__}: {err}", failed=True)
                else:
                    return {**row, "action": "embed", "chunks": pickle.dumps(result),
                            "contents": pickle.dumps(contents)}
        assert skip is not None
        return {**row, "reason": skip.reason, "failed": skip.failed}


_COLUMNS = ("root", "path", "size", "mtime", "taken", "words", "sidecars", "pixels", "sha", "action", "reason",
            "failed", "chunks", "contents", "vectors", "model")


class Embedder:
    """A Ray Data model actor: embeds the items of the rows that need it (one model call per batch)."""

    def __init__(self, options: RayIndexOptions) -> None:
        from freeret_tui.engine.models import load_model

        self.model = load_model(options.model, options.device, options.batch_size, dtype=options.dtype,
                                image_max_pixels=options.image_max_pixels)
        self.identity = pickle.dumps(identity(self.model))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        todo = [n for n, action in enumerate(batch["action"]) if action == "embed"]
        per_row = [pickle.loads(batch["contents"][n]) for n in todo]
        items = [c for contents in per_row for c in contents]
        kinds = [c.kind for n in todo for c in pickle.loads(batch["chunks"][n])]
        vectors = self.model.embed(items, Side.CANDIDATE, kinds) if items else np.empty((0, self.model.dim))
        out = list(batch["vectors"])
        start = 0
        for n, contents in zip(todo, per_row, strict=True):
            out[n] = np.ascontiguousarray(vectors[start:start + len(contents)], dtype=np.float32).tobytes()
            start += len(contents)
        batch["vectors"] = np.array(out, dtype=object)
        batch["contents"] = np.array([b""] * len(out), dtype=object)  # the pixels are not needed past here
        batch["model"] = np.array([self.identity] * len(out), dtype=object)
        return batch


def plan(store: Store, paths: Sequence[Path], options: IndexOptions) -> tuple[list[dict[str, Any]], int, list[Path]]:
    """The files to send (new or changed since the index saw them, a photo's sidecars included), how many are
    unchanged, and every file found."""
    files = newest_first(walk(paths, options.exclude))
    work: list[dict[str, Any]] = []
    unchanged = 0
    for root, path in files:
        row = store.file_row(path)
        try:
            st = path.stat()
        except OSError:
            st = None
        if row is not None and st is not None and (row.size, row.mtime) == (st.st_size, st.st_mtime) and (
                row.status != "indexed" or row.sidecars == sidecar_state(path)):  # a sidecar changed: words again
            unchanged += 1
            continue
        known = row if row is not None and row.status == "indexed" else None
        work.append({"root": os.fsencode(root), "path": os.fsencode(path), "stored_sha": known and known.sha256 or "",
                     "stored_pixels": known and known.pixels or ""})
    return work, unchanged, [p for _, p in files]


class Writer:
    """The one writer: commits the pipeline's rows through the store's transactions, ``flush_items`` at a time."""

    def __init__(self, store: Store, expected: dict[str, Any], dim: int, flush_items: int) -> None:
        self.store = store
        self.dim = dim
        self.pending_items = 0
        self.expected = expected
        self.flush_items = flush_items
        self.rows: list[dict[str, Any]] = []
        self.written = 0
        self.progress: Callable[[int], None] | None = None  # files written so far, after each commit
        self.stats = {"indexed": 0, "items": 0, "unchanged": 0, "removed": 0, "left": 0, "reread": 0}
        self.skipped: list[Skip] = []

    def add(self, row: dict[str, Any]) -> None:
        if row["model"] and pickle.loads(row["model"]) != self.expected:
            raise StoreError(f"a model actor runs {pickle.loads(row['model'])}, not {self.expected}: every node "
                             "must have the same model files and freeret-tui version")
        self.rows.append(row)
        self.pending_items += len(row["vectors"]) // (4 * self.dim)
        # As the indexer batches: about ``flush_items`` items, or four times as many files that need no model.
        if self.pending_items >= self.flush_items or len(self.rows) >= 4 * self.flush_items:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        with self.store.transaction():
            for row in self.rows:
                self._write(row)
        self.written += len(self.rows)
        self.rows.clear()
        self.pending_items = 0
        if self.progress:
            self.progress(self.written)

    def _write(self, row: dict[str, Any]) -> None:
        store, stats = self.store, self.stats
        path, root = Path(os.fsdecode(row["path"])), Path(os.fsdecode(row["root"]))
        size, mtime, action = int(row["size"]), float(row["mtime"]), row["action"]
        meta = {"taken": float(row["taken"]) or None, "sidecars": row["sidecars"], "pixels": row["pixels"] or None}
        if action == "gone":
            if store.file_row(path) is not None:
                store.remove_file(path)
                stats["removed"] += 1
        elif action == "touch":
            known = store.file_row(path)
            store.touch_file(path, size, mtime, row["sha"])
            # A sidecar changed, or the photo's own metadata: its words and date again.
            if known is not None and (known.sidecars, known.sha256) != (row["sidecars"], row["sha"]):
                store.set_photo_meta(path, meta["taken"], row["words"], row["sidecars"])
                stats["reread"] += 1
            stats["unchanged"] += 1
        elif action == "reuse":
            found = store.reusable(row["sha"], path)
            if found is None:  # its twin went meanwhile: left unrecorded, so the next run indexes it
                stats["left"] += 1
                return
            store.put_file(path, root, size, mtime, row["sha"], _worded(found[0], row["words"]), found[1],
                           embedded=False, **meta)
            stats["indexed"] += 1
        elif action == "embed":
            chunks = _worded(pickle.loads(row["chunks"]), row["words"])
            vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(chunks), -1)
            store.put_file(path, root, size, mtime, row["sha"], chunks, vectors, **meta)
            stats["indexed"] += 1
            stats["items"] += len(chunks)
        else:
            skip = Skip(path, row["reason"], bool(row["failed"]))
            self.skipped.append(skip)
            store.put_skip(path, root, size, mtime, skip.reason, skip.failed)


def _worded(chunks: list[Chunk], words: str) -> list[Chunk]:
    """A file's chunks with a photo's own words (photo_meta.py, read for this path) as its image's text."""
    return [replace(c, text=words) if c.kind is Kind.IMAGE else c for c in chunks]


def index_with_ray(
    store: Store,
    paths: Sequence[Path],
    ray_options: RayIndexOptions,
    options: IndexOptions = IndexOptions(),
    progress: Progress | None = None,
) -> tuple[IndexStats, int]:
    """Index ``paths`` on the connected Ray cluster; returns the stats and how many stored files went."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from freeret_tui.engine.models.reader import model_facts

    started = time.perf_counter()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command's own progress line says files done, rate and ETA
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    facts = model_facts(ray_options.model, ray_options.image_max_pixels)
    store.bind_model(facts.name, facts.dim, facts.image_max_pixels)
    reread_photos(store)  # an index made before photos' dates and words were read
    expected = identity(facts)  # what every model actor must report
    work, unchanged, present = plan(store, paths, options)
    writer = Writer(store, expected, facts.dim, options.flush_items)
    if work:
        known = frozenset(sha for sha, _ in store.file_hashes().values() if sha)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor: dict[str, Any] = {"num_cpus": ray_options.cpus_per_actor}
        if ray_options.gpus_per_actor:
            actor["num_gpus"] = ray_options.gpus_per_actor
        rows = (
            ray.data.from_items(work)
            .map_batches(Extractor, batch_size=EXTRACT_BATCH, num_cpus=1,
                         compute=ray.data.ActorPoolStrategy(size=ray_options.extract_workers),
                         fn_constructor_kwargs={"spec": ray_options.model,
                                                "image_max_pixels": ray_options.image_max_pixels,
                                                "options": options, "known": known},
                         scheduling_strategy=here)
            .map_batches(Embedder, batch_size=EMBED_BATCH,
                         compute=ray.data.ActorPoolStrategy(size=ray_options.embed_actors),
                         fn_constructor_kwargs={"options": ray_options}, **actor)
        )
        writer.progress = (lambda done: progress(done, len(work), writer.stats["items"])) if progress else None
        for row in rows.iter_rows():
            writer.add(row)
        writer.flush()
    removed = sweep(store, paths, present)
    store.ensure_prefilter()
    s = writer.stats
    stats = IndexStats(files_seen=len(present), files_indexed=s["indexed"], files_unchanged=unchanged + s["unchanged"],
                       items_added=s["items"], skipped=tuple(writer.skipped), seconds=time.perf_counter() - started,
                       files_removed=s["removed"], files_reread=s["reread"])
    return stats, removed

