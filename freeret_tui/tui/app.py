"""The app and its factory, shared by the CLI, the tests and the screenshot script.

Importing this module does not import torch: the model loads in a worker after the first paint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.app import App

from freeret_tui.engine.models.base import Model
from freeret_tui.engine.session import SessionConfig
from freeret_tui.errors import UsageError
from freeret_tui.settings import Settings, data_dir
from freeret_tui.tui.backend import Backend, Opener, system_opener
from freeret_tui.tui.screens import SearchScreen

IMAGE_MODES = ("auto", "halfcell")


class FreeretApp(App):
    """Search screen on top; the backend is closed (daemon stopped, lock released) on exit."""

    CSS_PATH = "freeret.tcss"
    TITLE = "freeret-tui"

    def __init__(self, backend: Backend, image_mode: str = "auto", keymap: dict[str, str] | None = None):
        super().__init__()
        self.backend = backend
        self.image_mode = image_mode
        self.keys = self._normalize_keymap(keymap or {})
        self.set_keymap(self.keys)

    def on_mount(self) -> None:
        self.push_screen(SearchScreen(self.backend, self.image_mode, self.keys))

    def on_unmount(self) -> None:
        self.backend.close()

    def active_bindings_help(self) -> list[tuple[str, str]]:
        """(key, what it does) of the search screen's bindings, after any rebinding."""
        return [(binding.key_display or self.get_key_display(binding), binding.description)
                for _, binding, _enabled, _tooltip in self.screen.active_bindings.values() if binding.show]


def create_app(
    folders: list[Path],
    settings: Settings,
    opener: Opener = system_opener,
    image_mode: str = "auto",
    start_daemon: bool = True,
    named_model: str | None = None,
    named_image_max_pixels: int | None = None,
    loader: Callable[[SessionConfig], Model] | None = None,
) -> FreeretApp:
    """The app for ``folders`` (watched by a daemon in this process unless one already runs). ``named_model``: the
    model named on the command line, which wins over the one the index was built with (``named_image_max_pixels``
    likewise for its image budget). ``loader``: how the model is made (tests pass a fake)."""
    from freeret_tui.engine.session import Session

    missing = [str(f) for f in folders if not f.expanduser().is_dir()]
    if missing:
        raise UsageError(f"not a folder: {', '.join(missing)}")
    if image_mode not in IMAGE_MODES:
        raise UsageError(f"image mode must be one of {', '.join(IMAGE_MODES)}")
    config = settings.session_config(named_model, named_image_max_pixels)
    session = Session(data_dir(), config, loader=loader) if loader else Session(data_dir(), config)
    backend = Backend(session, [f.expanduser().resolve() for f in folders], opener, start_daemon)
    return FreeretApp(backend, image_mode, settings.keys)
