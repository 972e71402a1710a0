"""The sweep queue: what a detached runner will train next, one run after another. The
state lives in `<runs>/queue.json`, so this screen only shows and edits that file; the
runner goes on when the app is closed."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.widgets import DataTable, Header, Static

from trainer.pure import queue as Q
from trainer.pure.states import ITEM_SHOWN_AS, STATE_STYLE, ItemState
from tui.screens.base import OrpoScreen
from tui.widgets.keys_footer import KeysFooter
from tui.workspace import Workspace


class QueueScreen(OrpoScreen):
    CSS_PATH = "queue.tcss"
    BINDINGS = [
        Binding("p", "pause", "Pause/go", id="queue.pause", tooltip="Pause the queue after the current run, or let it go on"),
        Binding("k", "move(-1)", "Up", id="queue.up", show=False, tooltip="Move the queued item earlier"),
        Binding("j", "move(1)", "Down", id="queue.down", show=False, tooltip="Move the queued item later"),
        Binding("x", "cancel", "Cancel", id="queue.cancel", tooltip="Cancel the item (a running one is stopped with SIGINT)"),
        Binding("X", "cancel_all", "Cancel all", id="queue.cancel_all", show=False, tooltip="Cancel every queued and running item"),
        Binding("g", "start_runner", "Run queue", id="queue.run", tooltip="Start the queue runner if it is not running"),
        Binding("a", "set_aside", "Set aside", id="queue.set_aside", show=False,
                tooltip="Move a damaged queue.json aside (kept beside it) and start an empty queue"),
    ]

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="queue", cursor_type="row", zebra_stripes=True)
        yield Static(id="queue-status")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.title, self.sub_title = "Queue", str(self.workspace.runs_dir / Q.QUEUE_FILE)
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
        data = Q.read(self.workspace.runs_dir)
        if Q.DAMAGED in data:
            self.query_one(DataTable).clear()
            self.query_one("#queue-status", Static).update(Text(
                f"⚠ {data[Q.DAMAGED]}: the queue cannot be shown or changed, and nothing overwrites it · "
                "a sets it aside (kept as a backup) and starts an empty queue", style="bold red"))
            return
        items = data.get("items", [])
        table = self.query_one(DataTable)
        selected = self.selected_id
        table.clear()
        for n, item in enumerate(items, start=1):
            state = ItemState.read(item.get("state"))
            table.add_row(str(n), item.get("label", ""), Text(str(state), style=STATE_STYLE[ITEM_SHOWN_AS[state]]),
                          item.get("preset", "").rsplit("/", 1)[-1], (item.get("run_dir") or "").rsplit("/", 1)[-1], key=item["id"])
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        alive = Q.runner_alive(self.workspace.runs_dir)
        shown = (ItemState.QUEUED, ItemState.RUNNING, ItemState.COMPLETED, ItemState.FAILED)
        counts = {s: sum(1 for i in items if i.get("state") == s) for s in shown}
        self.query_one("#queue-status", Static).update(
            f"runner {'running' if alive else 'not running'} · {'PAUSED · ' if data.get('paused') else ''}"
            + " · ".join(f"{counts[s]} {s}" for s in shown)
            + ("" if alive or not counts[ItemState.QUEUED] else "  ·  g starts the runner"))

    @property
    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def change(self, edit) -> object:
        """Run one edit of the queue file; a damaged or unwritable file is a notice, not a crash."""
        try:
            return edit()
        except Q.QueueDamaged as exc:
            self.notify(str(exc), severity="error", timeout=10)
        except OSError as exc:
            self.notify(f"Queue not changed: {exc.filename or Q.QUEUE_FILE}: {exc.strerror or exc}", severity="error", timeout=10)
        finally:
            self.refresh_queue()
        return None

    def action_pause(self) -> None:
        runs_dir = self.workspace.runs_dir

        def toggle() -> None:
            paused = not Q.read(runs_dir).get("paused", False)
            Q.set_paused(runs_dir, paused)
            if not paused:
                Q.ensure_runner(runs_dir)
            self.notify("queue paused after the current run" if paused else "queue goes on")

        self.change(toggle)

    def action_move(self, delta: int) -> None:
        if self.selected_id:
            self.change(lambda: Q.move(self.workspace.runs_dir, self.selected_id, delta))

    def action_cancel(self) -> None:
        if self.selected_id:
            self.change(lambda: Q.cancel(self.workspace.runs_dir, self.selected_id))

    def action_cancel_all(self) -> None:
        self.change(lambda: Q.cancel_all(self.workspace.runs_dir))

    def action_start_runner(self) -> None:
        def start() -> None:
            pid = Q.ensure_runner(self.workspace.runs_dir)
            self.notify(f"queue runner pid {pid}" if pid else "nothing to run")

        self.change(start)

    def action_set_aside(self) -> None:
        kept = self.change(lambda: Q.set_aside_damaged(self.workspace.runs_dir))
        if kept is not None:
            self.notify(f"The damaged queue is kept as {kept.name}; the queue is empty now")

    def commands(self):
        yield SystemCommand("Pause or resume the queue", "The current run finishes; the next waits", self.action_pause)
        yield SystemCommand("Cancel all queued runs", "Cancel every queued and running item", self.action_cancel_all)
