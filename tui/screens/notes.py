"""A run's notes.md, edited in place: what the user learned from the run, kept beside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, TextArea

from tui.run_notes import read_notes, write_notes
from tui.screens.dialogs import leave_unless_kept


class NotesScreen(Screen):
    DEFAULT_CSS = "NotesScreen TextArea { height: 1fr; }"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="notes.save", tooltip="Save notes.md", priority=True),
        Binding("escape", "back", "Back", id="notes.back", tooltip="Back (asks about unsaved changes)", priority=True),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.original = read_notes(run_dir)

    def compose(self) -> ComposeResult:
        yield Header()
        yield TextArea(self.original, id="notes", language="markdown" if _has_markdown() else None)
        yield Footer()

    def on_mount(self) -> None:
        self.title, self.sub_title = "Notes", self.run_dir.name
        self.query_one(TextArea).focus()

    @property
    def dirty(self) -> bool:
        return self.query_one(TextArea).text != self.original

    def action_save(self) -> bool:
        self.original = self.query_one(TextArea).text
        write_notes(self.run_dir, self.original)
        self.notify(f"Saved {self.run_dir.name}/notes.md")
        return True

    def action_back(self) -> None:
        self.leave(then=self.app.pop_screen)

    def leave(self, then) -> None:
        leave_unless_kept(self, self.dirty, f"{self.run_dir.name}/notes.md", self.action_save, then)


def _has_markdown() -> bool:
    """Syntax highlighting needs Textual's optional tree-sitter extra."""
    return importlib.util.find_spec("tree_sitter_markdown") is not None
