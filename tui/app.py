"""The orpo-tui application and the one factory the CLI and the tests both use."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui.screens.preset_list import PresetListScreen


class OrpoApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "orpo-tui"
    SUB_TITLE = "ORPO fine-tuning on MLX"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", tooltip="Quit orpo-tui (runs keep training)", priority=True),
        Binding("question_mark,f1", "toggle_keys", "Keys", id="app.keys", tooltip="Show or hide the key help panel"),
    ]

    def __init__(self, presets_dir: Path, runs_dir: Path) -> None:
        super().__init__()
        self.presets_dir = presets_dir
        self.runs_dir = runs_dir

    def on_mount(self) -> None:
        self.push_screen(PresetListScreen())

    async def action_quit(self) -> None:
        """Quitting never drops unsaved edits: a screen with changes asks first."""
        leave = getattr(self.screen, "leave", None)
        if leave is not None and getattr(self.screen, "dirty", False):
            leave(then=self.exit)
        else:
            self.exit()

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from getattr(screen, "commands", lambda: [])()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Background work never fails silently: its error becomes a visible message."""
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            err = event.worker.error
            self.notify(f"{event.worker.name}: {type(err).__name__}: {err}", severity="error", timeout=10)


def make_app(presets_dir: Path, runs_dir: Path) -> OrpoApp:
    return OrpoApp(Path(presets_dir), Path(runs_dir))
