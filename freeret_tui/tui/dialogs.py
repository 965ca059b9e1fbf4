"""The dialogs over the search screen: the help (keys as bound now) and the list of files not indexed."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from freeret_tui.display import visible


class FailuresScreen(ModalScreen):
    """Files that were not indexed and why."""

    BINDINGS = [Binding("escape,q,F", "dismiss", "Close")]

    def __init__(self, failures: list[tuple[str, str]]):
        super().__init__()
        self.failures = failures

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"[b]Not indexed[/] ({len(self.failures)}) — escape closes", id="dialog-title")
            table: DataTable = DataTable(cursor_type="row", id="failures")
            table.add_columns("file", "reason")
            for path, reason in self.failures:
                # The whole path: names repeat across folders (README.md, IMG_0001.jpg).
                table.add_row(Text(visible(path)), Text(visible(reason)), key=path)
            yield table


class HelpScreen(ModalScreen):
    """The keys, as bound now (config.toml's [keys] may rebind them)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, keys: list[tuple[str, str]]):
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        lines = "\n".join(f"[b]{key:>10}[/]  {what}" for key, what in self.keys)
        extra = ("\n[b]       1-9[/]  jump to hit n (a citation \\[n] in an answer is hit n)"
                 "\n[b]   j k ↑ ↓[/]  move through the hits; enter opens one"
                 "\n\nIn the query box keys type text: tab or enter moves to the hits; ctrl+q quits anywhere."
                 "\n[b]Query box[/]: words; kind:image|text|page, in:FOLDER, after:/before:YYYY-MM-DD;"
                 "\nan image path (typed or pasted) searches by that image.")
        with Vertical(id="dialog"):
            yield Static("[b]freeret-tui keys[/] — escape closes\n\n" + lines + extra, id="help")
