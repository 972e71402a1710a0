"""Queue a grid of runs over one or two fields of a preset."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Button, Input, Label, Static

from trainer.pure import queue as Q
from trainer.pure.config import ConfigError
from tui.widgets.dialog import Dialog


class SweepDialog(Dialog[int | None]):
    """A grid such as orpo.beta = 0.05, 0.1 × finetune.rank = 8, 16. The runs are added to
    the queue in `runs_dir` and its runner started here, so that a grid the trainer refuses
    is reported in the dialog itself; dismisses with how many runs were queued, or None."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel", id="sweep.cancel")]
    # Compact fields, a line apart: four bordered ones pushed the button off a 24-line
    # terminal.
    DEFAULT_CSS = """
    SweepDialog .dialog Input {
        margin-bottom: 1;
    }
    """

    def __init__(self, preset: Path, runs_dir: Path) -> None:
        super().__init__()
        self.preset = preset
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Sweep over {self.preset.name}", classes="title")
            yield Input(placeholder="first field, e.g. orpo.beta", id="key1", compact=True, value="orpo.beta")
            yield Input(placeholder="its values, e.g. 0.05, 0.1, 0.2", id="values1", compact=True)
            yield Input(placeholder="second field (optional), e.g. finetune.rank", id="key2", compact=True)
            yield Input(placeholder="its values, e.g. 8, 16", id="values2", compact=True)
            yield Static(id="sweep-error", classes="error-text")
            with Vertical(classes="buttons"):
                yield Button("Queue the runs", id="queue-them", variant="primary")

    def grid(self) -> dict[str, list[str]]:
        out = {}
        for k, v in (("#key1", "#values1"), ("#key2", "#values2")):
            key = self.query_one(k, Input).value.strip()
            values = [x.strip() for x in self.query_one(v, Input).value.split(",") if x.strip()]
            if key:
                out[key] = values
        return out

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.submit()

    def on_input_submitted(self) -> None:
        self.submit()

    def submit(self) -> None:
        grid = self.grid()
        error = self.query_one("#sweep-error", Static)
        if not grid or any(not values for values in grid.values()):
            error.update("Give at least one field with one or more comma-separated values.")
            return
        try:
            items = Q.sweep_items(self.preset, grid)
        except ConfigError as exc:
            error.update(str(exc))
            return
        try:
            Q.add(self.runs_dir, items)
            Q.ensure_runner(self.runs_dir)
        except Q.QueueDamaged as exc:
            error.update(str(exc))  # the dialog stays open with the grid as typed
            return
        except OSError as exc:
            error.update(f"Not queued: {exc.filename or self.runs_dir}: {exc.strerror or exc}")
            return
        self.dismiss(len(items))
