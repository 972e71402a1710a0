"""A preset file as TOML text: the way to open and repair a file that does not parse."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, TextArea

from trainer.pure.config import ConfigError, parse_preset_text
from trainer.pure.runs import atomic_write_text
from tui.screens.dialogs import leave_unless_kept


class TextEditorScreen(Screen):
    CSS_PATH = "text_editor.tcss"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="text.save", tooltip="Save the text and check it", priority=True),
        Binding("escape", "back", "Back", id="text.back", tooltip="Back (asks about unsaved changes)", priority=True),
    ]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.original = path.read_text(encoding="utf-8") if path.exists() else ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status", markup=False)
        yield TextArea(self.original, id="text", show_line_numbers=True, tab_behavior="indent")
        yield Footer()

    def on_mount(self) -> None:
        self.title, self.sub_title = "Preset as text", self.path.name
        self.check(self.original)
        self.query_one(TextArea).focus()

    def check(self, text: str) -> str | None:
        """Parse the text as the trainer would; show the first problem or that it is fine."""
        try:
            parse_preset_text(text, self.path.name)
            problem = None
        except ConfigError as exc:
            problem = str(exc)
        status = self.query_one("#status", Static)
        status.update(f"⚠ {problem}" if problem else "✓ loads as a valid preset")
        status.set_class(bool(problem), "error-text")
        return problem

    def action_save(self) -> bool:
        text = self.query_one(TextArea).text
        atomic_write_text(self.path, text)
        self.original = text
        problem = self.check(text)
        self.notify(f"Saved {self.path.name}" + (" (still has a problem)" if problem else ""), severity="warning" if problem else "information")
        return True

    @property
    def dirty(self) -> bool:
        return self.query_one(TextArea).text != self.original

    def action_back(self) -> None:
        self.leave(then=self.app.pop_screen)

    def leave(self, then) -> None:
        leave_unless_kept(self, self.dirty, self.path.name, self.action_save, then)
