"""Every run folder with its state, progress and latest numbers; refreshes by itself, and
is where runs are stopped, resumed, extended and deleted."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.widgets import DataTable, Header, Input, Static

from trainer.pure.config import Config, get_value
from trainer.pure.rank_status import rank_states, ranks_line
from trainer.pure.run_folder import RunFolder
from trainer.pure.run_lock import RunBusy
from trainer.pure.runs import read_status, trash_run
from trainer.pure.states import RESUMABLE, STATE_STYLE, RunState
from tui.compare import CompareError, differing_keys, display_value, load_side
from tui.messages import RunResumeRequested, RunStartRequested, RunStopRequested
from tui.run_notes import parse_tags, write_tags
from tui.runs_index import RunsIndex, RunSummary, format_duration, shown_duration
from tui.screens.base import OrpoScreen
from tui.widgets.ask_name import AskName
from tui.widgets.confirm import Confirm
from tui.widgets.fit_footer import FitFooter
from tui.widgets.fit_table import FitTable
from tui.widgets.resume_ranks import ask_resume_ranks
from tui.workspace import Workspace

HEAD_COLUMNS = (("run", "Run"), ("state", "State"), ("step", "Step"), ("loss", "Loss"), ("val_loss", "Val loss"),
                ("val_acc", "Val acc"))
PERF_COLUMNS = (("pairs_s", "Pairs/s"), ("peak_gb", "Peak GB"))
TAIL_COLUMNS = (("started", "Started"), ("duration", "Duration"), ("tags", "Tags"), ("note", "Note"))
WIDE = 120
"""From this many columns on, the list shows every column; below, NARROW_DROPPED go (the
highlighted run's tags and note show below the list instead)."""
NARROW_DROPPED = frozenset({"loss", "pairs_s", "peak_gb", "started", "tags", "note"})
ELASTIC = ("run", "tags", "note")
CONFIG = "cfg:"  # column keys of config settings that differ between the listed runs
# Settings that differ between any two runs without telling their experiments apart.
NOT_CONFIG_COLUMNS = ("description", "output.runs_dir", "output.name", "training.sample_prompts",
                      "training.prevent_sleep")
SHORT_NAMES = {"learning_rate": "lr", "grad_accumulation_steps": "grad acc", "min_learning_rate": "min lr",
               "max_seq_length": "max len", "steps_per_eval": "eval every", "steps_per_report": "report every"}
# The sorts `o` cycles through first, by column key and direction; every other column follows.
SORTS = (("started", True), ("state", False), ("loss", False), ("val_acc", True))


def config_label(key: str, keys: list[str]) -> str:
    last = key.rsplit(".", 1)[-1]
    if sum(k.rsplit(".", 1)[-1] == last for k in keys) > 1:
        return ".".join(key.split(".")[-2:])
    return SHORT_NAMES.get(last, last)


def sort_value(value) -> tuple:
    """Numbers by value, then text, then empty cells."""
    if value is None or value == "":
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


REFRESH_SECONDS = 2.0


def keys_of(summaries: list[RunSummary]) -> set[str]:
    return {str(s.path) for s in summaries}


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


LOADING = "…"  # in a cell whose number is still being read: not blank, which would say "none"


def still_loading(s: RunSummary) -> set[str]:
    """The columns whose numbers the index has not read yet (see tui.runs_index)."""
    keys = {"loss", "val_loss", "val_acc"} if s.loading else set()
    if s.perf is None:
        # A live run's duration is its clock; a finished one's comes from the summary.
        keys |= {"pairs_s", "peak_gb"} | (set() if s.active else {"duration"})
    return keys


class RunsScreen(OrpoScreen):
    CSS_PATH = "runs.tcss"
    BINDINGS = [
        Binding("enter", "monitor", "Monitor", id="runs.monitor", show=False, tooltip="Open the run's live charts"),
        Binding("x", "stop", "Stop", id="runs.stop", tooltip="Stop: SIGINT, then SIGTERM, then SIGKILL"),
        Binding("u", "resume", "Resume", id="runs.resume", tooltip="Resume a stopped or crashed run"),
        Binding("U", "resume_ranks", "Resume on N ranks", id="runs.resume_ranks", show=False,
                tooltip="Resume on another number of ranks (distributed.np)"),
        Binding("e", "extend", "Extend", id="runs.extend", show=False, tooltip="Train a finished run for more steps"),
        Binding("r", "rerun", "Run again", id="runs.rerun", show=False, tooltip="Start a new run from this run's resolved config"),
        Binding("d", "delete", "Delete", id="runs.delete", show=False, tooltip="Move the run folder to the trash"),
        Binding("o", "sort", "Sort", id="runs.sort", show=False, tooltip="Cycle the sort order"),
        Binding("space", "mark", "Mark", id="runs.mark", show=False, tooltip="Mark or unmark the run for comparison"),
        Binding("c", "compare", "Compare", id="runs.compare", tooltip="Compare the marked runs (or the highlighted one with the next)"),
        Binding("p", "playground", "Playground", id="runs.playground",
                tooltip="Prompt the run and its base model side by side (starts their servers)"),
        Binding("v", "diff_preset", "Diff preset", id="runs.diff_preset", show=False, tooltip="Diff the run's config against a preset"),
        Binding("t", "tags", "Tags", id="runs.tags", show=False, tooltip="Edit the run's tags"),
        Binding("n", "notes", "Notes", id="runs.notes", show=False, tooltip="Edit the run's notes (notes.md)"),
        Binding("slash", "filter", "Filter", id="runs.filter", show=False, tooltip="Filter runs by name, state, tag or note"),
    ]

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.summaries: list[RunSummary] = []
        self.sort_key, self.sort_reverse = SORTS[0]
        self.config_keys: list[str] = []
        self._configs: dict[Path, tuple[int, Config | None]] = {}
        self._raw: dict[Path, dict] = {}
        self.marked: list[Path] = []  # in marking order: the first is "A" in a diff
        self.to_select: Path | None = None  # a run just started, selected once it is listed
        # Set while the list is on top: it refreshes only then, and only then are the runs it
        # could not read at once read in the background (see refresh_runs, load_runs).
        self.shown = threading.Event()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="/ filter by name, state, tag or note · enter back to the list", id="run-filter")
        yield FitTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="detail")
        yield FitFooter()

    def on_mount(self) -> None:
        self.title, self.sub_title = "Runs", str(self.workspace.runs_dir)
        self.index = RunsIndex(self.workspace.runs_dir)
        table = self.query_one(DataTable)
        table.focus()
        if self.app.screen is self:
            self.shown.set()
        self.refresh_runs()
        # Every refresh that changes a cell re-renders the whole DataTable (about 20 ms
        # here); two seconds keeps the list live at half the cost of one.
        self.ticker = self.set_interval(REFRESH_SECONDS, self.refresh_runs)

    # Textual keeps a covered screen's timers running: pause while the monitor is on top.
    def on_screen_suspend(self) -> None:
        self.ticker.pause()
        self.shown.clear()

    def on_unmount(self) -> None:
        self.shown.clear()  # quitting: a background read stops at the next file, not the last

    def on_screen_resume(self) -> None:
        if self.app.screen is not self:
            return  # on the way to a screen pushed above it (a started run's monitor)
        self.shown.set()
        self.refresh_runs()
        self.ticker.resume()

    # ------------------------------------------------------------------ table

    def columns(self) -> list[tuple[str, str]]:
        table = self.query_one(FitTable)
        # The room the list has: the screen's, or less beside the F1 help panel.
        wide = (table.size.width + 2 if table.size.width else self.size.width) >= WIDE
        keys = self.config_keys
        cols = [*HEAD_COLUMNS, *((CONFIG + k, config_label(k, keys)) for k in keys), *PERF_COLUMNS, *TAIL_COLUMNS]
        return [(k, label) for k, label in cols if wide or k not in NARROW_DROPPED]

    @on(FitTable.WidthChanged)
    def resized(self) -> None:
        if hasattr(self, "index") and [k for k, _ in self.columns()] != [str(c.value) for c in self.query_one(FitTable).columns]:
            self.refresh_runs()

    def refresh_runs(self) -> None:
        if not self.shown.is_set():
            # Covered, by a monitor or a dialog: nobody sees the list, and it refreshes when
            # it shows again. (A run started from a preset opens its monitor above a list
            # that has not been shown yet: the monitor should not wait for it.)
            return
        self.workspace.launcher.reap()
        query = self.query_one("#run-filter", Input).value
        summaries = [s for s in self.index.refresh() if s.matches(query)]
        self.config_keys = self.differing_config_keys(summaries)
        columns = self.columns()
        self._raw = {s.path: self.raw(s) for s in summaries}
        self.summaries = sorted(summaries, key=lambda s: sort_value(self._raw[s.path].get(self.sort_key)),
                                reverse=self.sort_reverse)
        label = dict(columns).get(self.sort_key, self.sort_key)
        self.sub_title = f"{self.workspace.runs_dir} · sorted by {label.lower()}"
        table = self.query_one(FitTable)
        selected = self.selected_path
        if self.to_select is not None and str(self.to_select) in keys_of(self.summaries):
            selected, self.to_select = self.to_select, None
        rows = [self.row(s, columns) for s in self.summaries]
        keys = [str(s.path) for s in self.summaries]
        if [str(c.value) for c in table.columns] != [k for k, _ in columns]:
            table.clear(columns=True)
            # Names, notes and the settings that tell runs apart give way first at a narrow width.
            table.elastic = frozenset(k for k, _ in columns if k in ELASTIC or k.startswith(CONFIG))
            for key, text in columns:
                table.add_column(text, key=key)
        if keys != [str(k.value) for k in table.rows]:
            table.clear()
            for k, row in zip(keys, rows):
                table.add_row(*row, key=k)
        else:
            for k, row in zip(keys, rows):
                for column, value in zip(table.columns, row):
                    table.set_cell(k, column, value)
        if selected is not None and str(selected) in table.rows and self.selected_path != selected:
            table.move_cursor(row=table.get_row_index(str(selected)))
        self.show_detail()
        if self.index.pending and not self.index.loading:
            # After the frame being drawn: the thread competes with it for the interpreter.
            self.call_after_refresh(self.load_runs)

    @work(thread=True, group="runs-index", exit_on_error=False, name="read runs")
    def load_runs(self) -> None:
        """The metrics the list could not read at once (see tui.runs_index), then the list
        again; it stops while another screen covers the list."""
        if self.index.load(keep_going=self.shown.is_set):
            self.app.call_from_thread(self.refresh_runs)

    def config_of(self, run: Path) -> Config | None:
        config = RunFolder(run).config
        try:
            stamp = config.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._configs.get(run)
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, load_side(run).config)
            except CompareError:
                cached = (stamp, None)
            self._configs[run] = cached
        return cached[1]

    def differing_config_keys(self, summaries: list[RunSummary]) -> list[str]:
        configs = [c for c in (self.config_of(s.path) for s in summaries) if c is not None]
        return differing_keys(configs, skip=NOT_CONFIG_COLUMNS)

    def raw(self, s: RunSummary) -> dict:
        """The values behind the cells, which sorting uses."""
        perf = s.perf or {}
        config = self.config_of(s.path)
        values = {
            "run": s.name, "state": s.state, "step": s.step, "loss": s.loss, "val_loss": s.val_loss,
            "val_acc": s.val_acc, "started": s.started_at or 0, "tags": " ".join(s.tags), "note": s.note,
            "pairs_s": perf.get("mean_pairs_per_second"), "peak_gb": perf.get("max_peak_memory_gb"),
            "duration": shown_duration(s, perf),
        }
        for key in self.config_keys:
            values[CONFIG + key] = get_value(config, key) if config is not None else None
        return values

    def row(self, s: RunSummary, columns: list[tuple[str, str]]) -> tuple:
        raw = self._raw[s.path]
        state = self.workspace.stop_phase.get(s.path) or s.state
        # Why a crashed run died comes before any alarm about its curves.
        note = (s.error if s.state == RunState.CRASHED else None) or s.alarm or s.error or s.note
        mark = f"{self.marked.index(s.path) + 1}● " if s.path in self.marked else ""
        cells = {
            "run": mark + s.name, "state": Text(str(state), style=STATE_STYLE.get(s.state, "")),
            "step": f"{s.step}/{s.total}", "loss": fmt(s.loss), "val_loss": fmt(s.val_loss),
            "val_acc": fmt(s.val_acc, ".3f"), "pairs_s": fmt(raw["pairs_s"], ".3g"), "peak_gb": fmt(raw["peak_gb"], ".3g"),
            "started": datetime.fromtimestamp(s.started_at).strftime("%m-%d %H:%M") if s.started_at else "",
            "duration": format_duration(raw["duration"]), "tags": " ".join(s.tags),
            "note": Text(note, style="red" if (s.alarm or s.error) else ""),
        }
        cells.update(dict.fromkeys(still_loading(s), LOADING))
        for key in self.config_keys:
            value = raw[CONFIG + key]
            cells[CONFIG + key] = "" if value is None else display_value(value)
        return tuple(cells[key] for key, _ in columns)

    def select_run(self, run_dir: Path) -> None:
        """Highlight `run_dir` as soon as the list holds it (a run started a moment ago may
        not be listed yet), so the keys act on the run the user just started."""
        self.to_select = run_dir
        if hasattr(self, "index"):  # mounted: else on_mount's refresh selects it
            self.refresh_runs()

    @property
    def selected_path(self) -> Path | None:
        s = self.selected
        return s.path if s else None

    @property
    def selected(self) -> RunSummary | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((s for s in self.summaries if str(s.path) == key), None)

    def show_detail(self) -> None:
        s = self.selected
        detail = self.query_one("#detail", Static)
        if s is None:
            detail.update(f"No runs in {self.workspace.runs_dir} yet. Start one from a preset (F2, then s).")
            return
        lines = [str(s.path)]
        if (s.world_size or 1) > 1:
            lines.append(ranks_line(rank_states(s.path, read_status(s.path))))
        if s.error:
            lines.append(f"{'crashed' if s.state == RunState.CRASHED else 'error'}: {s.error}")
        shown = {k for k, _ in self.columns()}
        if s.alarm and "note" not in shown:
            lines.append(f"⚠ {s.alarm}")
        if "note" not in shown:
            lines += [f"{label}: {text}" for label, text in (("tags", " ".join(s.tags)), ("note", s.note)) if text]
        if s.state == RunState.CRASHED:
            lines.append("The trainer is gone without recording an end: press u to resume from its last checkpoint.")
        detail.update("\n".join(lines))

    @on(DataTable.RowHighlighted)
    def highlighted(self) -> None:
        self.show_detail()

    @on(DataTable.RowSelected)
    def selected_row(self) -> None:
        self.action_monitor()

    # ------------------------------------------------------------------ actions

    def action_monitor(self) -> None:
        s = self.selected
        if s is not None:
            from tui.screens.monitor import MonitorScreen

            self.app.push_screen(MonitorScreen(self.workspace, s.path))

    def action_filter(self) -> None:
        self.query_one("#run-filter", Input).focus()

    @on(Input.Changed, "#run-filter")
    def filter_changed(self) -> None:
        self.refresh_runs()

    @on(Input.Submitted, "#run-filter")
    def filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def action_mark(self) -> None:
        s = self.selected
        if s is None:
            return
        if s.path in self.marked:
            self.marked.remove(s.path)
        else:
            self.marked.append(s.path)
        self.refresh_runs()

    def action_compare(self) -> None:
        runs = [p for p in self.marked if p.exists()]
        if len(runs) < 2:
            self.notify("Mark two or more runs with space, then press c.", severity="warning")
            return
        from tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(self.workspace, runs))

    def action_playground(self) -> None:
        s = self.selected
        if s is not None:
            from tui.screens.playground import PlaygroundScreen

            self.app.push_screen(PlaygroundScreen(self.workspace, [s.path]))

    def action_diff_preset(self) -> None:
        s = self.selected
        if s is None:
            return

        def done(name: str | None) -> None:
            if not name:
                return
            preset = self.workspace.presets_dir / (name if name.endswith(".toml") else f"{name}.toml")
            if not preset.is_file():
                self.notify(f"No preset {preset.name} in {self.workspace.presets_dir}", severity="error")
                return
            from tui.screens.compare import CompareScreen

            self.app.push_screen(CompareScreen(self.workspace, [s.path], against=preset))

        self.app.push_screen(AskName(f"Diff {s.name} against which preset?", s.preset), done)

    def action_tags(self) -> None:
        s = self.selected
        if s is None:
            return

        def ask(initial: str) -> None:
            self.app.push_screen(AskName(f"Tags for {s.name} (space or comma separated)", initial, allow_empty=True), done)

        def done(text: str | None) -> None:
            if text is None:
                return
            try:
                write_tags(s.path, parse_tags(text))
            except OSError as exc:
                self.notify(f"Tags not saved: {exc.filename or s.path}: {exc.strerror or exc}", severity="error", timeout=10)
                ask(text)  # what was typed stays, to retry or copy
                return
            self.refresh_runs()

        ask(" ".join(s.tags))

    def action_notes(self) -> None:
        s = self.selected
        if s is not None:
            from tui.screens.notes import NotesScreen

            self.app.push_screen(NotesScreen(s.path))

    def action_sort(self) -> None:
        """Cycle through the usual sorts, then every other column shown."""
        shown = [k for k, _ in self.columns()]
        order = [k for k, _ in SORTS] + [k for k in shown if k not in dict(SORTS)]
        key = order[(order.index(self.sort_key) + 1) % len(order)] if self.sort_key in order else order[0]
        self.sort_key, self.sort_reverse = key, dict(SORTS).get(key, False)
        self.refresh_runs()

    @on(DataTable.HeaderSelected)
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        self.sort_reverse = not self.sort_reverse if key == self.sort_key else dict(SORTS).get(key, False)
        self.sort_key = key
        self.refresh_runs()

    def action_stop(self) -> None:
        s = self.selected
        if s is None or not s.active:
            self.notify("Only a running run can be stopped.", severity="warning")
            return
        self.post_message(RunStopRequested(s.path))

    def action_resume(self) -> None:
        s = self.selected
        if s is None or s.state not in RESUMABLE:
            self.notify("Resume takes a stopped, crashed or failed run; extend a completed one (e).", severity="warning")
            return
        if s.busy_reason:
            self.notify(f"Not resumed: {s.busy_reason}", severity="warning")
            return
        self.post_message(RunResumeRequested(s.path))

    def action_resume_ranks(self) -> None:
        s = self.selected
        if s is None or s.state not in RESUMABLE:
            self.notify("Resume takes a stopped, crashed or failed run.", severity="warning")
            return
        if s.busy_reason:
            self.notify(f"Not resumed: {s.busy_reason}", severity="warning")
            return
        ask_resume_ranks(self, s.path, s.world_size or 1)

    def action_extend(self) -> None:
        s = self.selected
        if s is None or s.active:
            return

        def done(text: str | None) -> None:
            if text:
                try:
                    more = int(text)
                except ValueError:
                    self.notify(f"'{text}' is not a number of steps", severity="error")
                    return
                self.post_message(RunResumeRequested(s.path, [f"training.iters={s.total + more}"]))

        self.app.push_screen(AskName(f"Train {s.name} for how many more steps? (now {s.step}/{s.total})", "100"), done)

    def action_rerun(self) -> None:
        """A new run with exactly the config this one used, named after the same preset."""
        s = self.selected
        if s is not None:
            self.post_message(RunStartRequested(RunFolder(s.path).config, [f"output.name={s.preset}"]))

    def action_delete(self) -> None:
        s = self.selected
        if s is None:
            return
        if s.active or s.busy_reason:
            self.notify(f"Stop the run before deleting it{': ' + s.busy_reason if s.busy_reason else ''}.", severity="warning")
            return

        def done(choice: str) -> None:
            if choice != "delete":
                return
            try:
                target = trash_run(s.path)  # refuses, under the run's lock, if a trainer took it since
            except RunBusy as exc:
                self.notify(f"Not deleted: {exc}", severity="warning")
            except OSError as exc:
                self.notify(f"Not deleted: {exc.filename or s.path}: {exc.strerror or exc}", severity="error")
            else:
                self.notify(f"Moved {s.name} to {target.parent}")
            self.refresh_runs()

        self.app.push_screen(Confirm(f"Delete run {s.name}?", "The folder moves to .trash/ in the runs folder.",
                                     [("cancel", "Cancel", "default"), ("delete", "Delete", "error")]), done)

    def commands(self):
        yield SystemCommand("Stop run", "Stop the highlighted run (SIGINT → SIGTERM → SIGKILL)", self.action_stop)
        yield SystemCommand("Resume run", "Resume the highlighted stopped or crashed run", self.action_resume)
        yield SystemCommand("Resume on N ranks", "Resume the highlighted run on another number of ranks",
                            self.action_resume_ranks)
        yield SystemCommand("Extend run", "Train the highlighted run for more steps", self.action_extend)
        yield SystemCommand("Run again", "Start a new run from the highlighted run's config", self.action_rerun)
        yield SystemCommand("Delete run", "Move the highlighted run to the trash", self.action_delete)
        # The keys the 80-column footer leaves out, findable here as well as under F1.
        yield SystemCommand("Mark run", "Mark or unmark the highlighted run for comparison", self.action_mark)
        yield SystemCommand("Playground", "Prompt the highlighted run and its base model side by side", self.action_playground)
        yield SystemCommand("Compare marked runs", "Config diff, overlaid curves, samples and summary", self.action_compare)
        yield SystemCommand("Diff run against a preset", "The highlighted run's config against a preset", self.action_diff_preset)
        yield SystemCommand("Edit tags", "The highlighted run's tags", self.action_tags)
        yield SystemCommand("Edit notes", "The highlighted run's notes.md", self.action_notes)
        yield SystemCommand("Sort runs", "Cycle the sort order through the columns", self.action_sort)
