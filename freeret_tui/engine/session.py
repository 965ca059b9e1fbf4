"""The engine's one front door: a Session opens the index in a data dir, picks the model for it, loads it, and
offers every step the CLI, the daemon and the TUI run — index, search in stages, answer, status, the daemon.

Configuration flows one way: the caller's settings become a ``SessionConfig``; the session resolves what the
index itself decides (an index built with a model and an image budget keeps them unless the command line names
others) and hands plain options to the engine's modules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from freeret_tui.engine.daemon import Daemon, DaemonStatus, read_status
from freeret_tui.engine.indexer import IndexOptions, Progress, index_files
from freeret_tui.engine.models import DEFAULT_IMAGE_MAX_PIXELS, Model, load_model
from freeret_tui.engine.models.presets import resolve
from freeret_tui.engine.models.wire import SERVE_PREFIX
from freeret_tui.engine.query import Filters, Query
from freeret_tui.engine.rereads import reread_photos, reread_sidecars
from freeret_tui.engine.scan import newest_first, sweep, walk
from freeret_tui.engine.search import Searcher, SearchOptions, SearchResult, no_good_match
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import AnswerChunk, Hit, IndexStats
from freeret_tui.errors import ModelLoadError, NotReadyError


@dataclass(frozen=True)
class SessionConfig:
    """What a session is opened with. ``model_named`` / ``image_budget_named``: the command line named them, so
    they win over what the index was built with (which then needs a re-index)."""

    model: str = "default"
    model_named: bool = False
    image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS
    image_budget_named: bool = False
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 0
    max_new_tokens: int = 256
    mode: str = "hybrid"
    rerank: bool | None = None  # None: as the model's preset advises
    rerank_k: int = 10
    k: int = 10
    per_file: int = 2
    match_threshold: float = 0.5
    index: IndexOptions = IndexOptions()
    serve_token: str = ""  # the bearer token of a served model (serve:URL)


# Meta key: the serve:URL an index was last used through, so later commands go on using the server.
SERVED_BY = "served_by"


def choose(config: SessionConfig, index_model: str | None, index_budget: int | None,
           served_by: str | None = None) -> SessionConfig:
    """The one rule for an index's model: the one named on the command line, else the index's own (another
    model's vectors could not be searched with it) — through the server it was last used through, if any — else
    the configured one; likewise the image budget; then rerank, if not set, as that model's preset advises. A
    served model (serve:URL) is always the one asked for: its server says which model it is, binding it to the
    index refuses another's, and its rerank advice comes with it when it connects."""
    if not config.model_named and served_by and not config.model.startswith(SERVE_PREFIX):
        config = replace(config, model=served_by)
    served = config.model.startswith(SERVE_PREFIX)
    if not config.model_named and index_model is not None and not served:
        config = replace(config, model=index_model)
    if not config.image_budget_named and index_budget is not None:
        config = replace(config, image_max_pixels=index_budget)
    if config.rerank is None and not served:
        try:
            useful = resolve(config.model).rerank_useful
        except ModelLoadError:
            useful = False  # the model cannot be had; loading it says why, with the way out
        config = replace(config, rerank=useful)
    return config


def open_model(config: SessionConfig) -> Model:
    """The configured model with no index (evaluation builds its own)."""
    return load_model(config.model, config.device, config.batch_size, config.max_new_tokens, config.dtype,
                      config.image_max_pixels, config.serve_token)


class Session:
    """The index in ``data_dir`` and, once loaded, its model. Safe to share between threads: each thread gets
    its own connection to the index (apsw refuses one connection used by two threads at once)."""

    def __init__(self, data_dir: Path, config: SessionConfig, reset: bool = False,
                 loader: Callable[[SessionConfig], Model] = open_model):
        """``loader`` turns the resolved config into a model (tests pass a deterministic fake)."""
        self.data_dir = data_dir
        self.loader = loader
        self._local = threading.local()
        if reset:
            self.store.reset()
        self.config = choose(config, self.store.model_name, self.store.image_max_pixels,
                             self.store.get_meta(SERVED_BY))
        self.model: Model | None = None

    @property
    def store(self) -> Store:
        """This thread's connection to the index."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store.in_dir(self.data_dir)
        return store

    # -- the model ------------------------------------------------------------------------------------------

    def needs_model(self, answering: bool = False) -> bool:
        """Whether searching (or answering) needs the model: dense or hybrid candidates, rerank, answers."""
        return self.config.mode != "lexical" or bool(self.config.rerank) or answering

    def load_model(self) -> Model:
        """Load the model and tie the index to it (refused, with the reason, if the index holds another's)."""
        model = self.loader(self.config)
        self.store.bind_model(model.name, model.dim, model.image_max_pixels)
        if self.config.rerank is None:  # a served model: it says whether it reranks usefully
            self.config = replace(self.config, rerank=bool(getattr(model, "rerank_useful", False)))
        served = self.config.model if self.config.model.startswith(SERVE_PREFIX) else ""
        # A model named here, served or local, is the one to go on with (written only when that changes).
        if (self.config.model_named or served) and (self.store.get_meta(SERVED_BY) or "") != served:
            self.store.set_meta(SERVED_BY, served)
        self.model = model
        return model

    # -- indexing -------------------------------------------------------------------------------------------

    def changed(self, paths: Sequence[Path]) -> int:
        """How many files under ``paths`` are new or changed (size, mtime) since the index saw them: with none,
        ``index`` needs no model (loading one costs more than the whole check)."""
        return self._changed(walk(paths, self.config.index.exclude))

    def _changed(self, files: Iterable[tuple[Path, Path]]) -> int:
        count = 0
        for _root, path in files:
            row = self.store.file_row(path)
            try:
                st = path.stat()
            except OSError:
                count += row is None  # unreadable and never recorded: the indexer records why
                continue
            count += row is None or (row.size, row.mtime) != (st.st_size, st.st_mtime)
        return count

    def index(self, paths: Sequence[Path], progress: Progress | None = None) -> tuple[IndexStats, int]:
        """Index ``paths`` once; returns the stats and how many stored files went. The model must be loaded
        unless nothing changed (then vanished files are still removed)."""
        options = self.config.index
        files = newest_first(walk(paths, options.exclude))
        reread_photos(self.store)  # an index made before photos' dates and words were read: no model needed
        if self.model is not None:
            stats = index_files(self.store, self.model, files, options, progress)
        elif self._changed(files):  # the files just walked: no second walk
            raise NotReadyError("load the model first")
        else:  # nor for a sidecar written beside an unchanged photo (index_files reads those itself)
            stats = IndexStats(files_seen=len(files), files_unchanged=len(files),
                               files_reread=reread_sidecars(self.store, files))
        removed = sweep(self.store, paths, [p for _, p in files])
        self.store.ensure_prefilter()  # a large index indexed here, not by the daemon, gets its prefilter too
        return stats, removed

    def daemon(self, roots: Iterable[Path], flush_items: int | None = None, rescan_seconds: float = 600.0,
               log: Callable[[str], None] = lambda message: None) -> Daemon:
        """A daemon over ``roots`` with its own connection (it runs in its own thread or process)."""
        if self.model is None:
            raise NotReadyError("load the model first")
        options = self.config.index if flush_items is None else replace(self.config.index, flush_items=flush_items)
        return Daemon(Store.in_dir(self.data_dir), self.model, roots, self.data_dir, options,
                      rescan_seconds=rescan_seconds, log=log)

    def status(self) -> DaemonStatus:
        return read_status(self.store, self.data_dir)

    def failures(self, limit: int = -1, offset: int = 0) -> list[tuple[str, str]]:
        """(path, reason) of every file not indexed, newest first (``limit`` -1: all of them)."""
        return self.store.skips(limit, offset)

    def maintenance(self) -> dict[str, object]:
        """Check the index and rebuild its vector tables (the daemon must not be running)."""
        return self.store.maintenance()

    # -- searching ------------------------------------------------------------------------------------------

    def options(self, filters: Filters = Filters()) -> SearchOptions:
        """Search options from the config; lexical only (and no rerank) until the model is loaded."""
        c = self.config
        return SearchOptions(k=c.k, mode=c.mode if self.model is not None else "lexical",
                             rerank=bool(c.rerank) and self.model is not None, rerank_k=c.rerank_k,
                             per_file=c.per_file, filters=filters)

    def candidates(self, query: Query, filters: Filters = Filters()) -> list[Hit]:
        """Stage 1: the fused candidates, filtered (enough for the shown list and the rerank)."""
        if query.image is not None and self.model is None:
            raise NotReadyError("searching by image needs the model: it is not loaded (yet)")
        # rerank=True here only sizes the list: as many as are shown or reranked, whichever is more.
        return Searcher(self.store, self.model).candidates(query, replace(self.options(filters), rerank=True))

    def word_candidates(self, query: Query, filters: Filters = Filters()) -> list[Hit] | None:
        """Stage 1 by words alone, for a first paint that never waits for the model; None when ``candidates``
        needs no query vector either (it is as quick). Embedding a query costs 0.7 s with the default preset on
        a 2-core CPU and the word index a few ms (benchmarks/preset_cost.py)."""
        opts = self.options(filters)
        if self.model is None or query.image is not None or not query.text.strip() or opts.mode == "lexical":
            return None
        # rerank=True sizes the list as ``candidates`` does.
        return Searcher(self.store, None).candidates(query, replace(opts, mode="lexical", rerank=True))

    def rerank_steps(self, query: Query, hits: Sequence[Hit], filters: Filters = Filters()) -> Iterator[list[Hit]]:
        """Stage 2, batch by batch: the list reordered with the scores known so far."""
        return Searcher(self.store, self.model).rerank_steps(query, hits, self.options(filters))

    def require_index(self) -> None:
        if self.store.model_name is None:
            raise NotReadyError("the index is empty: run `freeret-tui index FOLDER…` first")

    def search(self, query: Query, filters: Filters = Filters()) -> SearchResult:
        """Both stages to the end (the CLI); the index must exist."""
        self.require_index()
        return Searcher(self.store, self.model).search(query, self.options(filters))

    def no_good_match(self, hits: Sequence[Hit]) -> bool:
        return no_good_match(hits, self.config.match_threshold)

    def answer(self, question: str, hits: Sequence[Hit], stop: threading.Event) -> Iterator[AnswerChunk]:
        from freeret_tui.engine.answer import answer

        if self.model is None:
            raise NotReadyError("answers need the model: it is not loaded (yet)")
        yield from answer(self.model, question, hits, stop)
