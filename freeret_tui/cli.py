"""Command line: ``freeret-tui FOLDER…`` opens the TUI; ``index``, ``search``, ``ask``, ``eval``, ``models``,
``daemon``, ``maintenance`` and ``serve`` are the commands.

Importing this module is cheap (no torch): models load inside the commands that need one. Every error a person
can cause ends in one line on stderr; usage errors exit with status 2, other failures with 1.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from freeret_tui.cli_parser import COMMANDS, build_parser, build_tui_parser
from freeret_tui.display import duration, one_line, rate, visible
from freeret_tui.engine.models.devices import speed_hint
from freeret_tui.errors import FreeretError, NotReadyError, UsageError
from freeret_tui.settings import Settings, data_dir, load_settings


def run_tui(argv: list[str]) -> int:
    args = build_tui_parser().parse_args(argv)
    _quiet(args.verbose)
    try:
        settings = _settings(args)
        from freeret_tui.tui.app import create_app

        app = create_app(args.folders, settings, image_mode=args.image_mode, start_daemon=not args.no_daemon,
                         named_model=args.model, named_image_max_pixels=args.image_max_pixels)
    except UsageError as err:
        print(f"freeret-tui: error: {visible(str(err))}", file=sys.stderr)
        return 2
    except FreeretError as err:
        print(f"freeret-tui: {visible(err.explain(), lines=True)}", file=sys.stderr)
        return 1
    # textual-image asks the terminal what graphics it supports when first imported; done here, before Textual
    # owns the terminal, the answers cannot arrive later as key presses (a stray "?" opened the help dialog).
    import textual_image.renderable  # noqa: F401

    app.run()
    return int(app.return_code or 0)


def _settings(args: argparse.Namespace) -> Settings:
    names = ("model", "device", "dtype", "batch_size", "mode", "rerank", "rerank_k", "k", "chunk_tokens",
             "max_new_tokens", "image_max_pixels")
    values = {n: getattr(args, n, None) for n in names}
    values["chunk_overlap"] = getattr(args, "chunk_overlap", None)
    if isinstance(values["mode"], list):  # eval takes lists; its own code handles them
        values["mode"] = None
    return load_settings(values)


def _session(args: argparse.Namespace, settings: Settings, reset: bool = False) -> Any:
    """The engine session for this command: the index in the data dir, with the model the command line names or
    else the index's own."""
    from freeret_tui.engine.session import Session

    config = settings.session_config(getattr(args, "model", None), getattr(args, "image_max_pixels", None))
    return Session(data_dir(), config, reset=reset)


def _quiet(verbose: bool) -> None:
    """Unless -v: no transformers advice and no tqdm bars while a model loads (daemon.log got them as one
    10-kB line). A first download still shows its progress: huggingface_hub sets its bars' `disable` itself,
    and TQDM_DISABLE only changes the default of bars that do not."""
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", module=r"(torch|transformers|huggingface_hub|accelerate)(\.|$)")
    # With torchao installed (it comes with GPU stacks), importing transformers logs torchao's missing CUDA kernels
    # and torch's pytree deprecations to stderr, four lines: libraries' news, not the person's. Errors still show.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    os.environ.setdefault("TORCH_LOGS", "-all")


def _load_model(session: Any) -> Any:
    """The model, with one line on stderr saying so and how long it took."""
    started = time.perf_counter()
    print(f"loading model {session.config.model}…", end="", file=sys.stderr, flush=True)
    try:
        model = session.load_model()
    finally:
        print(f" {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return model


class _ProgressLine:
    """files done / total, items embedded, rate and ETA, redrawn in place on stderr after each model call (so a
    long file's passages count up while its file count stands still)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int, items: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        if done:
            pace = f"{rate(done / elapsed)}  {duration((total - done) * elapsed / done)} left"
        else:  # the first file is long: its passages' rate, since no file's is known yet
            pace = f"{rate(items / elapsed, 'items')}  time left not known yet"
        print(f"\r{done}/{total} files  {items} items embedded  {pace}   ", end="", file=sys.stderr, flush=True)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    missing = [str(p) for p in args.paths if not p.expanduser().exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    session = _session(args, settings, reset=args.reindex)
    if args.ray:
        stats, removed = _index_with_ray(args, session)
    # A model or image budget named on the command line is checked against the index's even with nothing to do.
    elif args.model or args.image_max_pixels or session.changed(args.paths):
        hint = speed_hint(_load_model(session))
        if hint:
            print(f"note: {hint}", file=sys.stderr)
        stats, removed = session.index(args.paths, _ProgressLine())
        print(file=sys.stderr)
    else:
        stats, removed = session.index(args.paths)  # nothing to embed: no model
    reread = f" ({stats.files_reread} with their words and dates read again)" if stats.files_reread else ""
    print(f"this run: {stats.files_indexed} indexed, {stats.files_unchanged} unchanged{reread}, {len(stats.skipped)} "
          f"not indexed, {removed} removed; {stats.items_added} items in {stats.seconds:.1f}s")
    for skip in stats.skipped:
        print(f"  not indexed {visible(str(skip.path))}: {visible(skip.reason)}")
    counts = session.store.counts()
    left_out = counts.get("skipped", 0) + counts.get("failed", 0)
    print(f"the index: {counts.get('indexed', 0)} indexed, {counts.get('skipped', 0)} skipped, "
          f"{counts.get('failed', 0)} failed" + (" (`freeret-tui daemon status` lists why)" if left_out else ""))
    return 0


def _index_with_ray(args: argparse.Namespace, session: Any) -> tuple[Any, int]:
    """The Ray Data pipeline over ``args.paths`` with the session's model, on the cluster ``args.ray`` names."""
    from freeret_tui.engine import ray_cluster
    from freeret_tui.engine.models.wire import SERVE_PREFIX

    c = session.config
    if c.model.startswith(SERVE_PREFIX):
        raise UsageError("--ray runs the model on the cluster's own actors: give --model a model, not serve:URL")
    for flag in ("actors", "extract_workers"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    ray_cluster.require_token_auth()  # before Ray is imported
    try:
        import ray
    except ImportError:
        raise FreeretError("--ray needs Ray, which is not installed",
                           ['install it: `pip install "ray[serve,data]>=2.60,<2.61"`']) from None
    from freeret_tui.engine.ray_index import RayIndexOptions, index_with_ray

    options = RayIndexOptions(model=c.model, device=c.device, dtype=c.dtype, batch_size=c.batch_size,
                              image_max_pixels=c.image_max_pixels, embed_actors=args.actors,
                              gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
                              extract_workers=args.extract_workers)
    ray_cluster.connect(None if args.ray == "local" else args.ray)
    try:
        result = index_with_ray(session.store, args.paths, options, c.index, _ProgressLine())
    except ray.exceptions.RayError as err:  # a worker's own error (killed workers are retried, not raised)
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise FreeretError(f"the Ray pipeline failed: {first}", [
            "what was committed stays: run the same command again to go on from there"]) from None
    finally:
        ray.shutdown()
    print(file=sys.stderr)
    return result


def _search(args: argparse.Namespace, settings: Settings, text: str) -> tuple[Any, Any]:
    from freeret_tui.engine.query import Query, parse_query

    if args.image is not None and not args.image.is_file():
        raise UsageError(f"no such image: {args.image}")
    query, filters = parse_query(text)
    query = Query(query.text, args.image or query.image)
    if not query.text.strip() and query.image is None:
        raise UsageError("the query is empty: give some words, or --image PATH")
    session = _session(args, settings)
    session.require_index()  # before a model loads for nothing
    if session.needs_model(answering=args.command == "ask") or query.image is not None:
        _load_model(session)
    return session.search(query, filters), session


def _hit_json(rank: int, hit: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "path": str(hit.path),
        "kind": hit.kind.value,
        "location": hit.location,
        "title": hit.title,
        "snippet": hit.text[:300],
        "fused_score": round(hit.fused_score, 6),
        "dense_score": hit.dense_score,
        "lexical_score": hit.lexical_score,
        "rerank_prob": hit.rerank_prob,
        "copies": [str(path) for path in hit.copies],
        # The file's date (a photo's taken time where its EXIF says), local time, as the filters read it.
        "date": datetime.fromtimestamp(hit.dated).isoformat(timespec="seconds") if hit.dated else None,
    }


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    result, session = _search(args, settings, args.query)
    no_match = session.no_good_match(result.hits)
    if args.json:
        print(json.dumps({
            "query": args.query,
            "image": str(args.image) if args.image else None,
            "mode": session.options().mode,
            "reranked": result.reranked,
            "no_good_match": no_match,
            "hits": [_hit_json(n, h) for n, h in enumerate(result.hits, start=1)],
            "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
        }))
        return 0
    if no_match:
        print("no good match" + (" (best candidates below)" if result.hits else ""))
    for n, hit in enumerate(result.hits, start=1):
        # Only the rerank probability means the same in every query; stage-1 scores are relative (--json has them).
        score = f"p={hit.rerank_prob:.2f}  " if hit.rerank_prob is not None else ""
        where = visible(str(hit.path)) + (f" ({hit.location})" if hit.location else "")
        snippet = visible(one_line(hit.text, 100))
        also = "".join(f"\n      also at {visible(str(path))}" for path in hit.copies)
        print(f"{n:>2}. {score}{where}" + (f"\n      {snippet}" if snippet else "") + also)
    return 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    result, session = _search(args, settings, args.question)
    stop = threading.Event()
    text, cited = "", ()
    try:
        for chunk in session.answer(args.question, result.hits, stop):
            text += chunk.text
            cited = chunk.citations if chunk.done else cited
            if not args.json:
                print(visible(chunk.text, lines=True), end="", flush=True)
    except KeyboardInterrupt:
        stop.set()
        print("\n[stopped]", file=sys.stderr)
    sources = [_hit_json(n, h) for n, h in enumerate(result.hits[:5], start=1)]
    if args.json:
        print(json.dumps({"question": args.question, "answer": text, "citations": list(cited), "sources": sources}))
        return 0
    print()
    for s in sources:
        mark = "*" if s["rank"] in cited else " "
        print(f"{mark}[{s['rank']}] {visible(s['path'])}" + (f" ({s['location']})" if s["location"] else ""))
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from freeret_tui.engine.evaluation import evaluate, load_beir
    from freeret_tui.engine.models import Pooling
    from freeret_tui.engine.prompts import Framing
    from freeret_tui.engine.session import open_model

    data = load_beir(args.corpus, args.queries, args.qrels)
    print(f"loading model {settings.model}…", file=sys.stderr)
    model = open_model(settings.session_config())
    report = evaluate(
        model,
        data,
        modes=args.mode,
        poolings=[Pooling(p) for p in args.pooling],
        framings=[Framing(f) for f in args.framing],
        rerank=args.rerank,
        rerank_k=args.rerank_k,
        rerank_modes=args.rerank_modes,
        dense_weight=args.dense_weight,
        fusion=args.fusion,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['model']} ({report['dtype']}): {report['queries']} queries, {report['corpus']} passages")
    print(f"{'mode':<8} {'pooling':<7} {'rerank':<6} {'nDCG@10':>7} {'R@1':>6} {'R@10':>6} {'MRR@10':>6} {'ms/q':>8}")
    for r in report["runs"]:
        print(f"{r['mode']:<8} {r['pooling'] or '-':<7} {r['rerank'] or '-':<6} {r['ndcg@10']:>7.4f} "
              f"{r['recall@1']:>6.3f} {r['recall@10']:>6.3f} {r['mrr@10']:>6.3f} {r['ms_per_query']:>8.1f}")
    return 0


def cmd_models(_args: argparse.Namespace, _settings: Settings) -> int:
    from freeret_tui.engine.models.presets import PRESETS

    for name, preset in PRESETS.items():
        rerank = "reranks usefully" if preset.rerank_useful else "rerank not useful"
        print(f"{name:<8} {preset.source:<48} {rerank}; {preset.note}")
    return 0


def cmd_daemon(args: argparse.Namespace, settings: Settings) -> int:
    from freeret_tui import daemon_cli

    return daemon_cli.run(args, settings)


def cmd_maintenance(args: argparse.Namespace, settings: Settings) -> int:
    from freeret_tui.engine.daemon import holder_pid

    if holder_pid(data_dir()) is not None:
        raise NotReadyError("stop the daemon first (`freeret-tui daemon stop`): maintenance rewrites the index")
    report = _session(args, settings).maintenance()
    if args.json:
        print(json.dumps(report))
        return 0
    if report["integrity"] != "ok":
        problems = report["integrity"]
        print(f"integrity: the index is damaged ({len(problems)} problems); it was left as it is. First problems:")
        for problem in problems[:5]:
            print(f"  {visible(problem)}")
        for step in report["next_steps"]:
            print(f"  - {step}")
        return 1
    print(f"integrity: ok; {report['orphan_fts_rows_removed']} orphan rows removed; "
          f"{report['bytes_before'] / 1e6:.1f} MB -> {report['bytes_after'] / 1e6:.1f} MB")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from freeret_tui import serve_cli

    return serve_cli.run(args, settings)


HANDLERS = {
    "index": cmd_index,
    "search": cmd_search,
    "ask": cmd_ask,
    "eval": cmd_eval,
    "models": cmd_models,
    "daemon": cmd_daemon,
    "maintenance": cmd_maintenance,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BrokenPipeError:  # `freeret-tui daemon status | head -3`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's last flush must not raise again
        return 141  # as a program killed by SIGPIPE, so `set -o pipefail` sees what happened


def _main(argv: list[str]) -> int:
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        near = difflib.get_close_matches(argv[0], COMMANDS, n=1, cutoff=0.6)
        if near and not Path(argv[0]).expanduser().exists():
            print(f"freeret-tui: error: {visible(argv[0])!s} is neither a command nor a folder; did you mean "
                  f"`freeret-tui {near[0]}`? (see --help)", file=sys.stderr)
            return 2
        return run_tui(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _quiet(getattr(args, "verbose", False))
    try:
        settings = _settings(args)
        return HANDLERS[args.command](args, settings)
    except UsageError as err:
        print(f"freeret-tui: error: {visible(str(err))}", file=sys.stderr)
        return 2
    except FreeretError as err:
        print(f"freeret-tui: {visible(err.explain(), lines=True)}", file=sys.stderr)
        return 1
