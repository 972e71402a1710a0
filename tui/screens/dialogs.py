"""Small modal dialogs shared by the screens: confirm, ask for a name, show a command."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class Confirm(ModalScreen[str]):
    """Ask a question; dismisses with the id of the chosen button ("cancel" on escape)."""

    BINDINGS = [Binding("escape", "dismiss('cancel')", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, message: str, choices: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self._title, self._message, self._choices = title, message, choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="title")
            yield Static(self._message)
            with Horizontal(classes="buttons"):
                for ident, label, variant in self._choices:
                    yield Button(label, id=ident, variant=variant)

    def on_mount(self) -> None:
        self.query(Button).last().focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")


def leave_unless_kept(screen, dirty: bool, what: str, save, then) -> None:
    """Run `then` unless there are unsaved changes the user wants to keep. `save` returns
    whether it saved (a form with errors refuses), and `then` runs only if it did."""
    if not dirty:
        then()
        return

    def done(choice: str) -> None:
        if choice == "discard" or (choice == "save" and save()):
            then()

    screen.app.push_screen(
        Confirm("Unsaved changes", f"{what} has changes that are not saved.",
                [("cancel", "Keep editing", "default"), ("discard", "Discard", "error"), ("save", "Save", "primary")]),
        done,
    )


class AskName(ModalScreen[str | None]):
    """Ask for a line of text (a name, tags, a number); dismisses with it, or None when
    cancelled. An empty answer counts as cancelled unless `allow_empty` (clearing tags)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, value: str = "", allow_empty: bool = False) -> None:
        super().__init__()
        self._title, self._value, self._allow_empty = title, value, allow_empty

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="title")
            yield Input(self._value, id="name")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("OK", id="ok", variant="primary")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(self._answer(event.value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self._answer(self.query_one("#name", Input).value) if event.button.id == "ok" else None)

    def _answer(self, text: str) -> str | None:
        text = text.strip()
        return text if text or self._allow_empty else None


class ShowCommand(ModalScreen[None]):
    """The exact shell command, selectable, with a copy button (OSC 52 works over SSH)."""

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
