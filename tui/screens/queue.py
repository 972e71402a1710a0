"""The sweep queue: what a detached runner will train next, one run after another. The
state lives in `<runs>/queue.json`, so this screen only shows and edits that file; the
runner goes on when the app is closed."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from trainer.pure import queue as Q
from trainer.pure.config import ConfigError
from trainer.pure.states import ITEM_SHOWN_AS, STATE_STYLE, ItemState



class QueueScreen(Screen):
    DEFAULT_CSS = """
    QueueScreen DataTable { height: 1fr; margin: 0 1; }
    QueueScreen #queue-status { height: auto; margin: 0 1; padding: 0 1; border-top: solid $primary-background; }
    """
    BINDINGS = [
        Binding("p", "pause", "Pause/go", id="queue.pause", tooltip="Pause the queue after the current run, or let it go on"),
        Binding("k", "move(-1)", "Up", id="queue.up", tooltip="Move the queued item earlier"),
        Binding("j", "move(1)", "Down", id="queue.down", tooltip="Move the queued item later"),
        Binding("x", "cancel", "Cancel", id="queue.cancel", tooltip="Cancel the item (a running one is stopped with SIGINT)"),
        Binding("X", "cancel_all", "Cancel all", id="queue.cancel_all", tooltip="Cancel every queued and running item"),
        Binding("g", "start_runner", "Run queue", id="queue.run", tooltip="Start the queue runner if it is not running"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="queue", cursor_type="row", zebra_stripes=True)
        yield Static(id="queue-status")
        yield Footer()

    def on_mount(self) -> None:
        self.title, self.sub_title = "Queue", str(self.app.runs_dir / Q.QUEUE_FILE)
        table = self.query_one(DataTable)
        for key, label in (("n", "#"), ("label", "Sweep point"), ("state", "State"), ("preset", "Preset"), ("run", "Run")):
            table.add_column(label, key=key)
        self.refresh_queue()
        self.ticker = self.set_interval(2.0, self.refresh_queue)

    def on_screen_suspend(self) -> None:
        self.ticker.pause()

    def on_screen_resume(self) -> None:
        self.refresh_queue()
        self.ticker.resume()

    def refresh_queue(self) -> None:
        data = Q.read(self.app.runs_dir)
        items = data.get("items", [])
        table = self.query_one(DataTable)
        selected = self.selected_id
        table.clear()
        for n, item in enumerate(items, start=1):
            table.add_row(str(n), item.get("label", ""), Text(item.get("state", ""), style=STATE_STYLE[ITEM_SHOWN_AS[ItemState.read(item.get("state"))]]),
                          item.get("preset", "").rsplit("/", 1)[-1], (item.get("run_dir") or "").rsplit("/", 1)[-1], key=item["id"])
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        alive = Q.runner_alive(self.app.runs_dir)
        counts = {s: sum(1 for i in items if i.get("state") == s) for s in (ItemState.QUEUED, ItemState.RUNNING, ItemState.COMPLETED, ItemState.FAILED)}
        self.query_one("#queue-status", Static).update(
            f"runner {'running' if alive else 'not running'} · {'PAUSED · ' if data.get('paused') else ''}"
            f"{counts['queued']} queued · {counts['running']} running · {counts['completed']} completed · {counts['failed']} failed"
            + ("" if alive or not counts["queued"] else "  ·  g starts the runner"))

    @property
    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_pause(self) -> None:
        paused = not Q.read(self.app.runs_dir).get("paused", False)
        Q.set_paused(self.app.runs_dir, paused)
        if not paused:
            Q.ensure_runner(self.app.runs_dir)
        self.notify("queue paused after the current run" if paused else "queue goes on")
        self.refresh_queue()

    def action_move(self, delta: int) -> None:
        if self.selected_id:
            Q.move(self.app.runs_dir, self.selected_id, delta)
            self.refresh_queue()

    def action_cancel(self) -> None:
        if self.selected_id:
            Q.cancel(self.app.runs_dir, self.selected_id)
            self.refresh_queue()

    def action_cancel_all(self) -> None:
        Q.cancel_all(self.app.runs_dir)
        self.refresh_queue()

    def action_start_runner(self) -> None:
        pid = Q.ensure_runner(self.app.runs_dir)
        self.notify(f"queue runner pid {pid}" if pid else "nothing to run")
        self.refresh_queue()

    def commands(self):
        yield SystemCommand("Pause or resume the queue", "The current run finishes; the next waits", self.action_pause)
        yield SystemCommand("Cancel all queued runs", "Cancel every queued and running item", self.action_cancel_all)


class SweepDialog(ModalScreen[None]):
    """A grid over one or two fields of a preset, e.g. orpo.beta = 0.05, 0.1 × finetune.rank = 8, 16."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel", id="sweep.cancel")]

    def __init__(self, preset) -> None:
        super().__init__()
        self.preset = preset

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Sweep over {self.preset.name}", classes="title")
            yield Input(placeholder="first field, e.g. orpo.beta", id="key1", value="orpo.beta")
            yield Input(placeholder="its values, e.g. 0.05, 0.1, 0.2", id="values1")
            yield Input(placeholder="second field (optional), e.g. finetune.rank", id="key2")
            yield Input(placeholder="its values, e.g. 8, 16", id="values2")
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
        Q.add(self.app.runs_dir, items)
        Q.ensure_runner(self.app.runs_dir)
        self.app.notify(f"Queued {len(items)} runs; the queue runner trains them one after another")
        self.dismiss()
        self.app.switch_mode("queue")
