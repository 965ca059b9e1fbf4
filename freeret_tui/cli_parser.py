"""The command line's grammar: every command, flag and help line of ``freeret-tui`` and of the TUI's own
``freeret-tui FOLDER…`` form, with one-line errors for a bad flag (exit status 2). No work is done here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from freeret_tui import __version__
from freeret_tui.display import visible
from freeret_tui.engine.fusion import FUSIONS
from freeret_tui.settings import DTYPES, MODES

COMMANDS = ("index", "search", "ask", "eval", "models", "daemon", "maintenance", "serve")


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
    p.add_argument("--ray", metavar="ADDRESS",
                   help="index on a Ray cluster (Ray Data): its address (auto, HOST:6379), or local to start one here")
    p.add_argument("--actors", type=int, default=1, help="with --ray: model actors (one per GPU; default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="with --ray: GPUs per model actor (default 0)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="with --ray: CPUs per model actor (default 1)")
    p.add_argument("--extract-workers", type=int, default=1,
                   help="with --ray: CPU workers reading and chunking files, on this machine (default 1)")

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

    p = sub.add_parser("serve", parents=[common],
                       help="serve the model from this machine (a GPU box) on a Ray cluster with token auth")
    p.add_argument("--address", help="Ray cluster to join (default: start one on this machine, on 127.0.0.1)")
    p.add_argument("--host", default="127.0.0.1",
                   help="where the HTTP endpoint listens (default 127.0.0.1; 0.0.0.0 lets other machines in)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--name", default="freeret", help="the route: http://HOST:PORT/NAME (default freeret)")
    p.add_argument("--replicas", type=int, default=1, help="copies of the model (one per GPU; default 1)")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs each replica takes (default 0: CPU)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica takes (default 1)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="longest answer, in model tokens (default 256)")

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
