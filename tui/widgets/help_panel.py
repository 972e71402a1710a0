"""F1: Textual's key help panel, headed by the two folders the app works on. An installed
copy keeps them in the user's folders rather than beside the code, so this is where a user
learns where their presets and runs are."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import HelpPanel, Static


def home_relative(path: Path) -> str:
    """`~/…` for a path in the home folder: shorter, and the same for every user."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class FoldersHelpPanel(HelpPanel):
    DEFAULT_CSS = """
    FoldersHelpPanel #folders {
        height: auto;
        margin-top: 1;
    }
    """

    def __init__(self, presets_dir: Path, runs_dir: Path) -> None:
        super().__init__()
        self.presets_dir = presets_dir
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        text = Text()
        for label, path in (("Presets", self.presets_dir), ("Runs", self.runs_dir)):
            text.append(f"{label} folder\n", style="bold")
            text.append(f" {home_relative(path)}\n")
        text.rstrip()
        yield Static(text, id="folders")
        yield from super().compose()
