"""What a new user hits in the TUI, with the FakeModel (no torch): keys typed in one burst after "/", counts that
tell skipped and failed files from indexed ones, a search that finds nothing saying why, an old answer gone with
its query, escape with nothing running, and asking in a session that loads no model."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from fake_model import FakeModel
from test_tui import SIZE, state, wait_for
from textual import events

from freeret_tui.settings import load_settings
from freeret_tui.tui.app import FreeretApp, create_app
from freeret_tui.tui.screens import SearchScreen
from freeret_tui.tui.widgets import AnswerPane, StatusBar


def _notes(folder: Path) -> Path:
    folder.mkdir()
    (folder / "lighthouse.txt").write_text("The lighthouse at the harbour guides the fishing boats at night.\n")
    (folder / "orchard.md").write_text("# Orchard\nApples, pears and cider in the autumn orchard.\n")
    return folder


def _app(folder: Path, model: FakeModel, start_daemon: bool = False, **settings: object) -> FreeretApp:
    return create_app([folder], load_settings({"rerank": False, **settings}), opener=lambda _p: None,
                      image_mode="halfcell", start_daemon=start_daemon, loader=lambda _c: model)


def _burst(app: FreeretApp, text: str) -> None:
    """Queue every key at once, as a fast typist or a paste delivers them (Pilot.press waits after each)."""
    names = {"/": "slash", " ": "space"}
    for character in text:
        key = events.Key(names.get(character, character), character)
        key.set_sender(app)
        app._driver.send_message(key)


def test_keys_typed_in_one_burst_after_slash_all_land_in_the_query_box(tmp_path: Path) -> None:
    app = _app(_notes(tmp_path / "notes"), FakeModel(), start_daemon=True)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.backend.status().counts["indexed"] == 2)
            await pilot.press(*"lighthouse", "enter")
            await wait_for(pilot, lambda: bool(app.screen.hits))
            _burst(app, "/orchard cider")  # from the hit list, where "o" opens and "a" asks
            await pilot.pause(0.3)
            box = app.screen.query_one("#query")
            assert app.focused is box and box.value == "orchard cider"  # "/" selects the old query: typing replaces it
            await pilot.press("end", *" /tmp/x.png")  # in the box "/" is a character (an image path)
            assert box.value == "orchard cider /tmp/x.png"

    asyncio.run(scenario())


def test_counts_tell_skipped_and_failed_from_indexed_and_no_match_says_why(tmp_path: Path, photos: Path) -> None:
    folder = _notes(tmp_path / "notes")
    shutil.copy(photos / "chelsea.png", folder / "cat.png")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    app = _app(folder, FakeModel(supports_images=False), start_daemon=True)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, SearchScreen)
            await wait_for(pilot, lambda: app.backend.model is not None and app.backend.status().queued == 0
                           and app.backend.status().counts["indexed"] == 2)
            screen.refresh_status()
            status = screen.query_one(StatusBar).plain
            assert status.startswith("indexed 2 · 1 skipped · 1 failed · tab, F: why"), status
            await pilot.press("tab")  # on the hits F is the failures key: the hint says just that
            screen.refresh_status()
            assert "1 failed · F: why" in screen.query_one(StatusBar).plain
            await pilot.press("slash")
            await pilot.press(*"kind:image cat", "enter")
            await wait_for(pilot, lambda: state(app).startswith("no match"))
            assert "fake-model is text-only: photos and scans are not indexed (F lists them)" in state(app)
            await pilot.press("slash", "ctrl+a", "ctrl+k", *"kind:text zebra", "enter")
            await wait_for(pilot, lambda: "hit" in state(app))
            assert state(app) in ("1 hit · filters kind:text", "2 hits · filters kind:text")

    asyncio.run(scenario())


def test_a_new_query_hides_the_old_answer_and_escape_with_nothing_running_changes_nothing(tmp_path: Path) -> None:
    app = _app(_notes(tmp_path / "notes"), FakeModel(), start_daemon=True)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: app.backend.status().counts["indexed"] == 2)
            await pilot.press(*"lighthouse", "enter")
            await wait_for(pilot, lambda: state(app) == "2 hits")
            await pilot.press("escape")
            assert state(app) == "2 hits"
            await pilot.press("a")
            pane = screen.query_one(AnswerPane)
            await wait_for(pilot, lambda: "cites" in str(pane.render()))
            assert pane.display
            await pilot.press("slash", "end", *" orchard", "enter")
            await wait_for(pilot, lambda: screen.query_one("#query").value == "lighthouse orchard" and
                           state(app) == "2 hits")
            assert not pane.display

    asyncio.run(scenario())


def test_asking_where_no_model_is_loaded_says_so_instead_of_waiting(tmp_path: Path) -> None:
    from freeret_tui.engine.session import Session, SessionConfig
    from freeret_tui.settings import data_dir

    folder = _notes(tmp_path / "notes")
    built = Session(data_dir(), SessionConfig(model="fake-model"), loader=lambda _c: FakeModel())
    built.load_model()
    built.index([folder])
    app = _app(folder, FakeModel(), mode="lexical")  # words only, not watching: no model is loaded

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert screen.model_note == "model: not used (word search)"
            await pilot.press(*"lighthouse", "enter")
            await wait_for(pilot, lambda: state(app) == "1 hit")
            await pilot.press("a")
            said = [n.message for n in app._notifications]
            assert any("answers need the model, which this run does not load" in m for m in said), said
            assert app.backend.model is None and not screen.query_one(AnswerPane).display

    asyncio.run(scenario())


def test_at_80_by_24_the_footer_still_shows_help_and_quit(tmp_path: Path) -> None:
    app = _app(_notes(tmp_path / "notes"), FakeModel(), mode="lexical")

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            assert "Quit" in app.export_screenshot()  # in the query box: ctrl+q
            await pilot.press("tab")  # on the hits
            assert app.focused is app.screen.query_one("#results")
            shot = app.export_screenshot()
            assert "Help" in shot and "Quit" in shot

    asyncio.run(scenario())


def test_a_wide_model_in_fp32_on_a_cpu_says_once_that_fast_indexes_faster(tmp_path: Path) -> None:
    """The default preset computes in fp32 on a CPU without bf16, ~6x slower a photo than `fast` (README): the person
    hears it once the model is loaded; a narrow model, bf16 or a GPU says nothing."""
    from freeret_tui.engine.models.devices import speed_hint

    wide = FakeModel(dim=1536)
    narrow, bf16, gpu = FakeModel(dim=576), FakeModel(dim=1536), FakeModel(dim=1536)
    bf16.dtype, gpu.device = "bfloat16", "cuda"
    assert [speed_hint(m) is None for m in (wide, narrow, bf16, gpu)] == [False, True, True, True]
    for model, said in ((wide, 1), (narrow, 0)):
        app = _app(_notes(tmp_path / f"notes{model.dim}"), model)

        async def scenario(app: FreeretApp = app, said: int = said) -> None:
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: "loading" not in app.screen.model_note)
                await pilot.pause()
                hints = [n for n in app._notifications if "--model fast" in str(n.message)]
                assert len(hints) == said, [str(n.message) for n in app._notifications]

        asyncio.run(scenario())


def test_word_hits_are_painted_before_the_query_vector_is_ready(tmp_path: Path) -> None:
    """Embedding a query takes 0.7 s with the default preset: the words' hits must not wait for it."""
    import threading

    from freeret_tui.engine.prompts import Side

    release = threading.Event()
    model = FakeModel()
    embed = model.embed

    def held_for_queries(items, side, *args, **kwargs):  # the daemon's candidate side is never held
        if side is Side.QUERY:
            assert release.wait(30), "the test never released the query's embedding"
        return embed(items, side, *args, **kwargs)

    model.embed = held_for_queries
    app = _app(_notes(tmp_path / "notes"), model, start_daemon=True)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: app.backend.status().counts["indexed"] == 2)
            await pilot.press(*"lighthouse", "enter")
            await wait_for(pilot, lambda: bool(screen.hits))
            assert state(app) == "1 hit by words · searching by meaning…"
            assert screen.hits[0].hit.path.name == "lighthouse.txt"
            release.set()
            await wait_for(pilot, lambda: state(app) == "2 hits")  # the fused list: the orchard note by meaning

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_a_vanished_model_server_leaves_the_words_hits_and_says_why(tmp_path: Path) -> None:
    """A served model (serve:URL) gone mid-session: the words' hits stay, with the reason, never a bare error."""
    from freeret_tui.engine.prompts import Side
    from freeret_tui.errors import ModelUnavailableError

    model = FakeModel()
    embed = model.embed

    def server_gone_for_queries(items, side, *args, **kwargs):  # indexing ran before the server went
        if side is Side.QUERY:
            raise ModelUnavailableError("the model server at http://gpu-box:8000/freeret is unreachable")
        return embed(items, side, *args, **kwargs)

    model.embed = server_gone_for_queries
    app = _app(_notes(tmp_path / "notes"), model, start_daemon=True)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: app.backend.status().counts["indexed"] == 2)
            await pilot.press(*"lighthouse", "enter")
            await wait_for(pilot, lambda: state(app) == "1 hit by words · the model server is unreachable")
            assert screen.hits[0].hit.path.name == "lighthouse.txt"
            assert any("gpu-box" in str(n.message) for n in app._notifications)

    asyncio.run(scenario())
