"""CLI contracts: one-line errors with exit status 2, import hygiene, and model-source errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from freeret_tui.cli import main
from freeret_tui.engine.models.presets import resolve
from freeret_tui.errors import ModelLoadError


def test_importing_the_cli_and_engine_does_not_import_torch() -> None:
    code = (
        "import sys, freeret_tui.cli, freeret_tui.engine.search, freeret_tui.engine.indexer, "
        "freeret_tui.engine.evaluation, freeret_tui.engine.models, freeret_tui.engine.session\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'textual') if m in sys.modules)\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_configuration_flows_one_way_and_models_load_only_through_the_session() -> None:
    """The engine never imports the settings, textual or rich (its callers hand it a SessionConfig); the CLI and
    the TUI never load a model themselves (they ask the engine's Session)."""
    import ast

    package = Path(__file__).resolve().parents[1] / "freeret_tui"

    def imported(path: Path) -> set[str]:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    for path in (package / "engine").rglob("*.py"):
        bad = {m for m in imported(path) if m == "freeret_tui.settings" or m.split(".")[0] in ("textual", "rich")}
        assert not bad, (path, bad)
    callers = [package / "cli.py", package / "daemon_cli.py", *(package / "tui").glob("*.py")]
    for path in callers:
        tree = ast.parse(path.read_text())
        loads = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "freeret_tui.engine.models"
                 and any(a.name == "load_model" for a in n.names)]
        assert not loads, path


@pytest.mark.parametrize(
    "argv",
    [["search", "--bogus"], ["search", "x", "--k", "many"], ["eval", "--corpus", "c"], ["search", "x", "--mode", "fuzzy"],
     ["eval", "--corpus", "c", "--queries", "q", "--qrels", "r", "--pooling", "mean"]],
)
def test_bad_flags_give_one_line_and_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_usage_errors_from_settings_and_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "x", "--k", "0"]) == 2
    assert "k must be at least 1" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["search", "x"]) == 1  # nothing typed wrong: the index is not there yet (not a usage error)
    assert "index is empty" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2  # the TUI's folders
    assert "not a folder" in capsys.readouterr().err


def test_eval_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.jsonl")
    assert main(["eval", "--corpus", missing, "--queries", missing, "--qrels", missing]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_model_sources_resolve_without_torch(tmp_path: Path) -> None:
    assert resolve("Qwen/Qwen2-VL-2B-Instruct").kind == "hub"
    assert resolve("default").location == "Qwen/Qwen2-VL-2B-Instruct"
    assert resolve(str(tmp_path)).kind == "dir"
    assert resolve("smollm2").kind == "gguf" and not resolve("smollm2").rerank_useful
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelLoadError, match="neither a preset"):
        resolve("not-a-model")


@pytest.mark.torch
def test_uncached_hub_model_offline_names_the_model_and_the_switch() -> None:
    from freeret_tui.engine.models import load_model

    with pytest.raises(ModelLoadError) as err:
        load_model("someone/some-vlm", device="cpu")
    assert "someone/some-vlm" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)


def test_one_rule_picks_the_model_for_an_index(tmp_path: Path) -> None:
    """Every command opens the engine's Session, which picks by one rule: the model named on the command line
    wins, else the index's own model (even over config.toml), else the configured one; the image budget likewise;
    rerank then defaults to what the chosen model's preset says."""
    from freeret_tui.engine.session import choose
    from freeret_tui.settings import load_settings

    configured = load_settings({"model": "smollm2"})  # as if config.toml named it
    config = configured.session_config()
    assert choose(config, "default", None).model == "default"  # the index's model, not the config's
    assert choose(config, "default", None).rerank is True  # Qwen2-VL reranks usefully
    assert choose(config, None, None).model == "smollm2"  # a new index: the configured model
    assert choose(config, None, None).rerank is False  # SmolLM2 reranks at chance
    named = configured.session_config(named_model="smollm2", named_image_max_pixels=5000)
    assert choose(named, "default", 200704).model == "smollm2"  # named on the command line
    assert choose(named, "default", 200704).image_max_pixels == 5000
    assert choose(config, "default", 200704).image_max_pixels == 200704  # the index's budget
    assert choose(load_settings({"rerank": True}).session_config(), None, None).rerank is True  # explicit stays
    assert choose(load_settings({"model": "pypi:missing/x.gguf"}).session_config(), None, None).rerank is False


def test_commands_that_need_no_model_load_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`index` with nothing changed and `search ""` never load the model: here the index's model ("fake-model")
    cannot be loaded at all, so loading it would fail the command."""
    from fake_model import FakeModel

    from freeret_tui.engine.session import Session, SessionConfig
    from freeret_tui.settings import data_dir

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("first note")
    (folder / "b.txt").write_text("second note")
    built = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    built.load_model()
    built.index([folder])
    (folder / "b.txt").unlink()  # a removal needs no model either
    assert main(["index", str(folder)]) == 0
    out = capsys.readouterr()
    assert "this run: 0 indexed, 1 unchanged, 0 not indexed, 1 removed" in out.out and "loading" not in out.err
    assert main(["search", ""]) == 2 and "the query is empty" in capsys.readouterr().err
    (folder / "a.txt").write_text("changed")  # now the model is needed, and this one cannot load
    assert main(["index", str(folder)]) == 1
    assert "loading model fake-model" in capsys.readouterr().err


def test_index_says_once_loaded_when_a_smaller_preset_would_index_faster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model 1,536 wide computing in fp32 on a CPU (the default preset where the CPU has no bf16): `index` says
    that `--model fast` indexes faster, on stderr, once the model is loaded (devices.speed_hint)."""
    from fake_model import FakeModel

    import freeret_tui.cli as cli
    from freeret_tui.engine.session import Session, SessionConfig
    from freeret_tui.settings import data_dir

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("first note")
    built = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel(dim=1536))
    built.load_model()
    built.index([folder])
    loading = cli._load_model

    def wide(session: Session) -> object:  # the command's own session, given the fake model's loader
        session.loader = lambda _c: FakeModel(dim=1536)
        return loading(session)

    monkeypatch.setattr(cli, "_load_model", wide)
    (folder / "a.txt").write_text("changed")
    assert main(["index", str(folder)]) == 0
    err = capsys.readouterr().err
    assert err.count("`--model fast` indexes about 6x faster") == 1, err


def test_a_mistyped_command_is_named_and_every_flag_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from freeret_tui.cli import build_parser, build_tui_parser

    assert main(["serach", "porto"]) == 2
    assert "did you mean `freeret-tui search`" in capsys.readouterr().err

    def options(parser: argparse.ArgumentParser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from options(sub)
            elif action.option_strings:
                yield parser.prog, action

    undocumented = [(prog, a.option_strings[0]) for prog, a in [*options(build_parser()),
                                                                *options(build_tui_parser())] if not a.help]
    assert not undocumented
    assert "--no-daemon" in build_parser().format_help()  # the TUI's flags, in the main help too


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`freeret-tui … | head`: the reader went away; no BrokenPipeError traceback, the status a SIGPIPE gives."""
    import os

    read, write = os.pipe()
    os.close(read)
    done = subprocess.run([sys.executable, "-m", "freeret_tui", "models"], stdout=write, stderr=subprocess.PIPE,
                          text=True, check=False)
    os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_loading_a_model_says_one_line_and_v_shows_the_libraries(tmp_path: Path, tiny_dirs: dict[str, Path]) -> None:
    import os

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("a note")
    command = [sys.executable, "-m", "freeret_tui", "index", str(folder), "--model", str(tiny_dirs["idefics3"]),
               "--dtype", "float32", "--device", "cpu"]
    said = {}
    for verbose in (False, True):
        env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "TRANSFORMERS_VERBOSITY")}
        env["FREERET_DATA_DIR"] = str(tmp_path / f"data-{verbose}")
        done = subprocess.run(command + ["-v"] * verbose, env=env, capture_output=True, text=True, check=True)
        said[verbose] = done.stderr
    lines = said[False].replace("\r", "\n").split("\n")
    assert lines[0].startswith("loading model ") and lines[0].endswith(" s"), said[False]
    assert "it/s" not in said[False] and "Loading weights" in said[True]  # transformers' own bar, with -v only


def test_the_progress_line_reads_a_slow_pace_and_one_long_file(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """No "0.0 files/s": a pace under 0.1 a second is said per minute or hour, and before the first file is done
    (one long note) the line counts its passages' pace."""
    import freeret_tui.cli as cli

    clock = iter([0.0, 100.0, 100.0, 7200.0])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    line = cli._ProgressLine()
    line(0, 1, 30)  # 100 s into a long note: 30 passages embedded
    line(4, 10, 200)  # 4 files in 100 s
    line(3, 10, 90)  # 3 files in 2 h
    err = capsys.readouterr().err
    assert "0/1 files  30 items embedded  0.3 items/s  time left not known yet" in err
    assert "2.4 files/min  2 min left" in err and "1.5 files/h  4 h 40 min left" in err
    assert "0.0 files/s" not in err
