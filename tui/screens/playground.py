"""Talk to a trained run beside its base model (and beside a second run): one prompt, up to
three columns whose answers stream in token by token, each from an `orpo-train serve` the
screen starts when it opens and stops when it closes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Header, Input, Label, Select, Static, TextArea

from trainer.pure.run_folder import RunFolder
from trainer.pure.serve import trained_on_chat_template
from tui.playground import (
    ServeError,
    ServerProcess,
    Settings,
    parse_settings,
    playground_entry,
    save_entry,
    served_argv,
    shown_text,
    stop_servers_on_hangup,
    stream_completion,
)
from tui.screens.base import OrpoScreen
from tui.widgets.fit_footer import FitFooter
from tui.workspace import Workspace

BASE = "base"  # the column (and the served choice) of the bare base model
STARTING = "starting server…"
READY = "ready"
ANSWERING = "answering…"
DONE = "done"
ERROR = "error"
SETTING_LABELS = (("temperature", "temp"), ("top_p", "top-p"), ("max_tokens", "max tokens"), ("seed", "seed"))


@dataclass
class Column:
    """One answer column: which model it asks, its server, what it said."""

    key: str  # "base", "A", "B": the widget ids and the saved entry's column name
    run: Path
    served: str  # one of tui.playground.SERVED
    state: str = STARTING
    error: str = ""
    text: str = ""
    updates: int = 0  # pieces shown for the current answer
    server: ServerProcess | None = field(default=None, repr=False)
    generation: int = 0  # which prompt the column answers; a new prompt outdates the old stream
    # Whether its run trained through the chat template: the prompt goes as a chat, else as
    # plain text. The base column asks as its run does, so both see the prompt the same way.
    chat: bool = False

    @property
    def title(self) -> str:
        return f"base model of {self.run.name}" if self.served == BASE else f"{self.key}: {self.run.name}"

    def status(self) -> Text:
        if self.state == ERROR:
            return Text(f"error: {self.error}", style="bold red")
        return Text(self.state, style="dim")


def served_choices(run: Path) -> list[str]:
    """The adapters a run column can serve: the latest always (a run without them gets the
    server's own error), the best and the fused model when the run has them."""
    folder = RunFolder(run)
    choices = ["final"]
    if folder.best_weights.is_file():
        choices.append("best")
    if (folder.fused() / "config.json").is_file():  # what orpo-train serve --fused loads
        choices.append("fused")
    return choices


class PlaygroundScreen(OrpoScreen):
    CSS_PATH = "playground.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        # Not a priority: an open adapters menu closes on escape before the screen does.
        Binding("escape", "back", "Back", id="playground.back", tooltip="Back (stops the playground's servers)"),
        # Many terminals send ctrl+enter as a plain enter; F5 reaches the app in all of them.
        Binding("f5,ctrl+enter", "send", "Send", id="playground.send", priority=True,
                tooltip="Send the prompt to every column"),
        Binding("ctrl+s", "save", "Save", id="playground.save", priority=True,
                tooltip="Append the prompt and the answers to each run's playground.jsonl"),
    ]

    def __init__(self, workspace: Workspace, runs: list[Path], columns: list[Column] | None = None,
                 start_servers: bool = True) -> None:
        """`runs`: one or two runs; the columns are the first run's base model, then each run.
        `columns` and `start_servers=False` show a given state without servers (snapshots)."""
        super().__init__()
        self.workspace = workspace
        self.runs = runs[:2]
        self.columns = columns or [Column(BASE, self.runs[0], BASE)] + [
            Column(key, run, "final") for key, run in zip("AB", self.runs)]
        self.start_servers = start_servers
        self.prompt = ""
        self.settings = Settings()

    def compose(self) -> ComposeResult:
        yield Header()
        yield TextArea(self.prompt, id="prompt", compact=True, placeholder="Prompt · F5 sends it to every column")
        with Horizontal(id="settings"):
            for name, label in SETTING_LABELS:
                yield Label(label)
                yield Input(str(getattr(self.settings, name)), id=name, compact=True)
        with Horizontal(id="columns"):
            for column in self.columns:
                with Vertical(id=f"col-{column.key}", classes="column"):
                    yield Static(column.title, classes="column-title", markup=False)
                    if column.served == BASE:
                        yield Static("no adapters", classes="column-served muted")
                    else:
                        choices = served_choices(column.run)
                        if column.served not in choices:
                            column.served = choices[0]
                        yield Select([(f"{c} adapters" if c != "fused" else "fused model", c) for c in choices],
                                     value=column.served, allow_blank=False, compact=True, id=f"served-{column.key}")
                    yield Static(column.status(), id=f"status-{column.key}", classes="column-status")
                    with VerticalScroll(classes="answer-box"):
                        yield Static(column.text, id=f"answer-{column.key}", markup=False, classes="answer")
        yield FitFooter()

    def on_mount(self) -> None:
        self.title = "Playground"
        self.sub_title = " vs ".join(run.name for run in self.runs)
        self.query_one("#prompt", TextArea).focus()
        if self.start_servers:
            stop_servers_on_hangup()
            for column in self.columns:
                self.start_server(column)

    def on_unmount(self) -> None:
        self.stop_servers()

    def stop_servers(self) -> None:
        """Each column's server, stopped off the event loop (a server may take a moment to
        go); the app stops any left at exit (tui.playground.stop_all_servers)."""
        servers = [c.server for c in self.columns if c.server is not None]
        for column in self.columns:
            column.server, column.generation = None, column.generation + 1
        if servers:
            threading.Thread(target=lambda: [s.stop() for s in servers], name="stop playground servers",
                             daemon=True).start()

    def action_back(self) -> None:
        """To the screen it was opened from: the runs list, or the comparison."""
        if self.app.screen is self:
            self.app.pop_screen()

    # ------------------------------------------------------------------ servers

    def start_server(self, column: Column) -> None:
        server = ServerProcess(served_argv(column.run, column.served))
        column.server, column.state, column.error = server, STARTING, ""
        self.show(column)

        def work() -> None:
            column.chat = trained_on_chat_template(column.run)  # reads the run's data: off the event loop
            try:
                server.start()
            except ServeError as exc:
                self.app.call_from_thread(self.server_failed, column, server, str(exc))
                return
            self.app.call_from_thread(self.server_ready, column, server)

        self.run_worker(work, thread=True, exit_on_error=False, name=f"serve {column.key}", group=f"serve-{column.key}")

    def server_ready(self, column: Column, server: ServerProcess) -> None:
        if column.server is server and self.is_attached:
            column.state = READY
            self.show(column)
        elif column.server is not server:  # replaced or closed while it started
            threading.Thread(target=server.stop, daemon=True, name="stop a replaced server").start()

    def server_failed(self, column: Column, server: ServerProcess, reason: str) -> None:
        if column.server is server and self.is_attached:
            column.state, column.error = ERROR, reason
            self.show(column)

    @on(Select.Changed)
    def served_changed(self, event: Select.Changed) -> None:
        key = (event.select.id or "").removeprefix("served-")
        column = next((c for c in self.columns if c.key == key), None)
        if column is None or event.value == column.served or not self.start_servers:
            return
        old = column.server
        column.served, column.generation = str(event.value), column.generation + 1
        if old is not None:
            threading.Thread(target=old.stop, daemon=True, name=f"stop server {key}").start()
        self.start_server(column)

    # ------------------------------------------------------------------ prompting

    def action_send(self) -> None:
        prompt = self.query_one("#prompt", TextArea).text.strip()
        if not prompt:
            self.notify("Type a prompt first.", severity="warning")
            return
        try:
            settings = parse_settings({name: self.query_one(f"#{name}", Input).value for name, _ in SETTING_LABELS})
        except ValueError as exc:
            self.notify(f"Not sent: {exc}", severity="error", timeout=10)
            return
        self.prompt, self.settings = prompt, settings
        for column in self.columns:
            if column.state == ERROR and column.server is not None and column.server.url is None:
                continue  # its server never started: its error stays
            if column.server is None or column.server.url is None:
                continue  # still starting: it answers the next prompt
            self.ask(column, prompt, settings)

    def ask(self, column: Column, prompt: str, settings: Settings) -> None:
        column.generation += 1
        generation, server = column.generation, column.server
        column.state, column.text, column.updates, column.error = ANSWERING, "", 0, ""
        self.show(column)

        def current() -> bool:
            return column.generation == generation and column.server is server

        def piece(text: str) -> None:
            if current():
                column.text += text
                column.updates += 1
                self.show(column)

        chat = column.chat
        def work() -> None:
            try:
                stream_completion(server.url, prompt, settings, chat, lambda p: self.app.call_from_thread(piece, p),
                                  cancelled=lambda: not current())
            except ServeError as exc:
                # A server that died says why (or how it ended); else the connection's own error.
                reason = server.exit_reason() if server.exited() else str(exc)
                self.app.call_from_thread(self.answer_failed, column, generation, reason)
                return
            self.app.call_from_thread(self.answer_done, column, generation)

        self.run_worker(work, thread=True, exit_on_error=False, name=f"ask {column.key}", group=f"ask-{column.key}")

    def answer_done(self, column: Column, generation: int) -> None:
        if column.generation == generation and self.is_attached:
            column.state = DONE
            self.show(column)

    def answer_failed(self, column: Column, generation: int, reason: str) -> None:
        if column.generation == generation and self.is_attached:
            column.state, column.error = ERROR, reason
            self.show(column)

    def show(self, column: Column) -> None:
        if not self.is_mounted:
            return
        self.query_one(f"#status-{column.key}", Static).update(column.status())
        self.query_one(f"#answer-{column.key}", Static).update(shown_text(column.text))

    # ------------------------------------------------------------------ saving

    def action_save(self) -> None:
        answered = [c for c in self.columns if c.text and c.state in (DONE, ANSWERING)]
        if not self.prompt or not answered:
            self.notify("Nothing to save yet: send a prompt first.", severity="warning")
            return
        if any(c.state == ANSWERING for c in answered):
            self.notify("Still answering: save once the answers are complete.", severity="warning")
            return
        answers = [{"column": c.key, "run": c.run.name, "served": c.served, "answer": c.text} for c in answered]
        runs = list(dict.fromkeys(c.run for c in answered))
        problems = save_entry(runs, playground_entry(self.prompt, self.settings, answers))
        for problem in problems:
            self.notify(f"Not saved: {problem}", severity="error", timeout=10)
        saved = len(runs) - len(problems)
        if saved:
            self.notify(f"Saved to {saved} run folder{'s' if saved > 1 else ''} ({RunFolder(runs[0]).playground.name})")

    def commands(self):
        yield SystemCommand("Send prompt", "Send the prompt to every column (F5)", self.action_send)
        yield SystemCommand("Save answers", "Append the prompt and answers to playground.jsonl (ctrl+s)", self.action_save)
