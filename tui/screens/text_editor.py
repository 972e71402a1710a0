"""A preset file as TOML text: the way to open and repair a file that does not parse."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.widgets import Header, Static, TextArea

from trainer.pure.config import ConfigError, parse_preset_text
from trainer.pure.runs import atomic_write_text
from tui.screens.editing import TextDocumentScreen, back_binding, save_binding
from tui.widgets.keys_footer import KeysFooter


class TextEditorScreen(TextDocumentScreen):
    CSS_PATH = "text_editor.tcss"
    BINDINGS = [save_binding("text", "Save the text and check it"), back_binding("text")]

    def __init__(self, path: Path) -> None:
        """Raises OSError when the file cannot be read at all (a folder named like a preset)."""
        raw = path.read_bytes() if path.exists() else b""
        text = raw.decode("utf-8", errors="replace")
        super().__init__(text)
        self.path = path
        # Bytes that are not UTF-8 show as U+FFFD; saving writes the file as UTF-8.
        self.not_utf8 = text.encode("utf-8") != raw

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status", markup=False)
        yield TextArea(self.original, id="text", show_line_numbers=True, tab_behavior="indent")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.title, self.sub_title = "Preset as text", self.path.name
        self.check(self.original)
        self.query_one(TextArea).focus()
        if self.not_utf8:
            self.notify(f"{self.path.name} is not UTF-8: its invalid bytes show as �; saving writes UTF-8",
                        severity="warning", timeout=10)

    @property
    def document_name(self) -> str:
        return self.path.name

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

    def save_text(self, text: str) -> None:
        # A file that still does not parse is saved all the same: repairing may take steps.
        atomic_write_text(self.path, text)
        problem = self.check(text)
        self.notify(f"Saved {self.path.name}" + (" (still has a problem)" if problem else ""),
                    severity="warning" if problem else "information")
