"""A run's notes.md, edited in place: what the user learned from the run, kept beside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from textual.app import ComposeResult
from textual.widgets import Header, TextArea

from trainer.pure.run_folder import RunFolder
from tui.run_notes import read_notes, write_notes
from tui.screens.editing import TextDocumentScreen, back_binding, save_binding
from tui.widgets.keys_footer import KeysFooter


class NotesScreen(TextDocumentScreen):
    CSS_PATH = "notes.tcss"
    BINDINGS = [save_binding("notes", "Save notes.md"), back_binding("notes")]

    def __init__(self, run_dir: Path) -> None:
        super().__init__(read_notes(run_dir))
        self.run_dir = run_dir

    def compose(self) -> ComposeResult:
        yield Header()
        yield TextArea(self.original, id="notes", language="markdown" if _has_markdown() else None)
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.title, self.sub_title = "Notes", self.run_dir.name
        self.query_one(TextArea).focus()

    @property
    def document_name(self) -> str:
        notes = RunFolder(self.run_dir).notes
        return f"{notes.parent.name}/{notes.name}"

    def save_text(self, text: str) -> None:
        write_notes(self.run_dir, text)
        self.notify(f"Saved {self.document_name}")


def _has_markdown() -> bool:
    """Syntax highlighting needs Textual's optional tree-sitter extra."""
    return importlib.util.find_spec("tree_sitter_markdown") is not None
