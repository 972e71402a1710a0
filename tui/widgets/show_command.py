"""Show a shell command to run outside the app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from tui.widgets.dialog import Dialog


class ShowCommand(Dialog[None]):
    """The exact command, selectable, with a copy button (OSC 52 works over SSH)."""

    BINDINGS = [Binding("escape", "dismiss", "Close", id="dialog.close"), Binding("c", "copy", "Copy", id="dialog.copy")]

    def __init__(self, title: str, command: str) -> None:
        super().__init__()
        self._title, self._command = title, command

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="title")
            yield Input(self._command, id="command")
            with Horizontal(classes="buttons"):
                yield Button("Copy", id="copy", variant="primary")
                yield Button("Close", id="close")

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self._command)
        self.notify("Copied to the clipboard")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "copy":
            self.action_copy()
        else:
            self.dismiss()
