"""Command line: ``freeret-tui FOLDER…`` opens the TUI; ``index``, ``search``, ``ask``, ``eval``, ``models``,
``daemon`` and ``maintenance`` are the commands.

Importing this module is cheap (no torch): models load inside the commands that need one. Every error a person
can cause ends in one line on stderr; usage errors exit with status 2, other failures with 1.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from freeret_tui import __version__
from freeret_tui.display import duration, one_line, visible
from freeret_tui.engine.fusion import FUSIONS
from freeret_tui.errors import FreeretError, NotReadyError, UsageError
from freeret_tui.settings import DTYPES, MODES, Settings, data_dir, load_settings

COMMANDS = ("index", "search", "ask", "eval", "models", "daemon", "maintenance")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (and exit status 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {visible(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _csv(choices: Sequence[str]) -> Any:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (comma-separated), not {value!r}")
        return items

    return parse


def _verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the libraries' own warnings and progress bars while a model loads")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="preset (default, fast, strong, smollm2), Hugging Face id, directory or .gguf")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", choices=DTYPES, help="auto picks bf16 where the hardware has it, else fp32")
    parser.add_argument("--batch-size", type=int, metavar="N", help="items per forward pass")
    parser.add_argument("--image-max-pixels", type=int, metavar="N",
                        help="most pixels a photo is read at (its image tokens); fixed per index")


def _search_mode_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES,
                        help="hybrid: meaning and words (default); dense: meaning only; lexical: words only, no model")
    parser.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                        help="let the model re-judge the top hits (default: as the model's preset advises)")


def build_parser() -> argparse.ArgumentParser:
    tui = argparse.HelpFormatter("freeret-tui")  # the TUI's own flags, shown here too, not only after a FOLDER
    tui.start_section("freeret-tui FOLDER… [options] opens the TUI on those folders and indexes them meanwhile")
    tui.add_arguments([a for a in build_tui_parser()._actions if a.option_strings and a.dest != "help"])
    tui.end_section()
    parser = _Parser(
        prog="freeret-tui",
        description="Local, private search over your own photos and documents.",
        epilog=tui.format_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"freeret-tui {__version__}")
    common = _Parser(add_help=False)
    _model_flags(common)
    _verbose_flag(common)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("index", parents=[common],
                       help="index folders once, with progress (`daemon start` keeps them indexed)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--reindex", action="store_true", help="forget the current index first (e.g. to change model)")
    p.add_argument("--chunk-tokens", type=int, metavar="N", help="model tokens per text passage (default 256)")
    p.add_argument("--chunk-overlap", type=int, metavar="N",
                   help="tokens a passage shares with the one before it (default 32)")

    def search_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--image", type=Path, help="search by this image (with or without query text)")
        p.add_argument("--k", type=int, help="number of results")
        _search_mode_flags(p)
        p.add_argument("--rerank-k", type=int, help="how many stage-1 hits the model reranks")
        p.add_argument("--json", action="store_true", help="print one JSON object (every score, timings)")

    p = sub.add_parser("search", parents=[common], help="search the index")
    p.add_argument("query", nargs="?", default="")
    search_flags(p)

    p = sub.add_parser("ask", parents=[common], help="answer a question over the top hits (streamed)")
    p.add_argument("question")
    search_flags(p)
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="longest answer, in model tokens (default 256)")

    p = sub.add_parser("eval", parents=[common], help="measure retrieval on BEIR-format files")
    p.add_argument("--corpus", type=Path, required=True, help="corpus.jsonl (_id, title, text)")
    p.add_argument("--queries", type=Path, required=True, help="queries.jsonl (_id, text)")
    p.add_argument("--qrels", type=Path, required=True, help="qrels TSV (query-id, corpus-id, score)")
    p.add_argument("--mode", type=_csv(MODES), default=list(MODES), help="comma-separated (default: all)")
    p.add_argument("--pooling", type=_csv(("premlp", "last")), default=["premlp"], help="premlp, last or both")
    p.add_argument("--framing", type=_csv(("mc", "yesno")), default=["mc"], help="mc, yesno or both")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True, help="also measure reranking")
    p.add_argument("--rerank-k", type=int, default=10, help="stage-1 hits reranked per query")
    p.add_argument("--rerank-modes", type=_csv(MODES), default=["hybrid"], help="stage-1 modes to rerank")
    p.add_argument("--fusion", choices=FUSIONS, default="convex", help="how hybrid mode fuses the two lists")
    p.add_argument("--dense-weight", type=float, default=0.2, help="dense share of the fused score (0..1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser("models", help="list model presets")

    p = sub.add_parser("daemon", help="watch folders and keep the index up to date in the background")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    for action, text in (("start", "start in the background"), ("run", "run in the foreground (systemd, debugging)")):
        d = dsub.add_parser(action, parents=[common], help=text)
        d.add_argument("paths", nargs="*", type=Path, metavar="FOLDER",
                       help="folders to watch (default: the ones watched last time)")
        d.add_argument("--nice", type=int, default=10, help="CPU niceness increment (0: none; default 10)")
        d.add_argument("--rescan-minutes", type=float, default=10.0, help="full reconcile scan interval")
    dsub.add_parser("stop", help="stop the background daemon")
    d = dsub.add_parser("status", help="roots, counts, rate, ETA and the last errors")
    d.add_argument("--json", action="store_true", help="one JSON object, with a page of the files not indexed")
    d.add_argument("--page", type=int, default=1, help="which page of the files not indexed, 200 a page (with --json)")

    p = sub.add_parser("maintenance", help="check the index and rebuild its vector tables to reclaim space")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def build_tui_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="freeret-tui", description="Open the TUI on these folders (indexed in the background).")
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER")
    _model_flags(parser)
    _search_mode_flags(parser)
    parser.add_argument("--no-daemon", action="store_true", help="search only; do not index the folders")
    parser.add_argument("--image-mode", choices=("auto", "halfcell"), default="auto",
                        help="auto: Kitty/Sixel where the terminal has them; halfcell: coloured blocks anywhere")
    _verbose_flag(parser)
    return parser


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
    """files done / total, rate and ETA, redrawn in place on stderr."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        print(f"\r{done}/{total} files  {rate:.1f} files/s  {duration(eta)} left   ", end="", file=sys.stderr, flush=True)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    missing = [str(p) for p in args.paths if not p.expanduser().exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    session = _session(args, settings, reset=args.reindex)
    # A model or image budget named on the command line is checked against the index's even with nothing to do.
    if args.model or args.image_max_pixels or session.changed(args.paths):
        _load_model(session)
        stats, removed = session.index(args.paths, _ProgressLine())
        print(file=sys.stderr)
    else:
        stats, removed = session.index(args.paths)  # nothing to embed: no model
    print(f"this run: {stats.files_indexed} indexed, {stats.files_unchanged} unchanged, {len(stats.skipped)} not "
          f"indexed, {removed} removed; {stats.items_added} items in {stats.seconds:.1f}s")
    for skip in stats.skipped:
        print(f"  not indexed {visible(str(skip.path))}: {visible(skip.reason)}")
    counts = session.store.counts()
    left_out = counts.get("skipped", 0) + counts.get("failed", 0)
    print(f"the index: {counts.get('indexed', 0)} indexed, {counts.get('skipped', 0)} skipped, "
          f"{counts.get('failed', 0)} failed" + (" (`freeret-tui daemon status` lists why)" if left_out else ""))
    return 0


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
        print(f"{n:>2}. {score}{where}" + (f"\n      {snippet}" if snippet else ""))
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


HANDLERS = {
    "index": cmd_index,
    "search": cmd_search,
    "ask": cmd_ask,
    "eval": cmd_eval,
    "models": cmd_models,
    "daemon": cmd_daemon,
    "maintenance": cmd_maintenance,
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
