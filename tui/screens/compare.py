"""Why did one run do better? Marked runs side by side: the config diff (derived values
included), one metric overlaid for all of them, their sample generations at a common step,
and a sortable summary that exports to CSV."""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Header, Static, TabbedContent, TabPane

from trainer.pure.events import MetricsTail
from trainer.pure.metrics import ORPO_METRICS, RATE_METRICS
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import atomic_write_text, run_label
from trainer.pure.states import ACTIVE
from tui.charts import NO_VALUES, WAITING, ChartSeries
from tui.compare import CompareError, config_diff, load_side, summaries_to_csv, summarize
from tui.playground import read_entries, shown_text
from tui.runs_index import format_duration
from tui.screens.base import OrpoScreen
from tui.series import RunSeries, cursor_move, ema, index_at_or_before, last_n
from tui.widgets.chart_view import ChartView
from tui.widgets.fit_footer import FitFooter
from tui.widgets.fit_table import FitTable
from tui.workspace import Workspace

OVERLAY_METRICS = tuple(f"{kind} {name}" for name in ORPO_METRICS for kind in ("train", "val")) + tuple(
    f"train {name}" for name in RATE_METRICS)
EXPORTS_DIR = ".exports"
# The summary's columns (compare.summarize's keys) and their headers, in display order.
SUMMARY_COLUMNS = {"run": "run", "preset": "preset", "state": "state", "steps": "steps", "world_size": "ranks",
                   "final_val_loss": "val loss",
                   "best_val_loss": "best val", "best_val_step": "best step", "final_val_accuracy": "val acc",
                   "final_val_margin": "val margin", "final_val_log_odds_chosen": "val log-odds",
                   "mean_pairs_per_second": "pairs/s", "max_peak_memory_gb": "peak GB", "duration_s": "duration"}
# Too narrow for all of them (80 columns), these give way, the first first; the export keeps all.
SUMMARY_DROPPED_FIRST = ("max_peak_memory_gb", "mean_pairs_per_second", "final_val_log_odds_chosen", "final_val_margin",
                         "preset", "best_val_step", "steps")


def load_series(run_dir: Path) -> RunSeries:
    series = RunSeries()
    series.add(MetricsTail(RunFolder(run_dir).metrics).read_new())
    return series


def nearest_common_step(a: list[dict], b: list[dict]) -> int | None:
    """The latest step at which both runs logged samples, else the closest pair of steps."""
    steps_a = {s.get("step") for s in a}
    steps_b = {s.get("step") for s in b}
    common = steps_a & steps_b
    if common:
        return max(common)
    if not steps_a or not steps_b:
        return None
    return min(steps_a, key=lambda x: min(abs(x - y) for y in steps_b))


def playground_lines(entry: dict) -> list[str]:
    """One saved playground exchange: when, the prompt, then each column's answer."""
    when = entry.get("time")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if isinstance(when, (int, float)) else "?"
    lines = [f"{stamp} » {entry['prompt']}"]
    for answer in entry["answers"]:
        who = "base model" if answer.get("served") == "base" else f"{answer.get('run', '?')} ({answer.get('served', '?')})"
        lines.append(f"  {who}: {answer.get('answer', '')}")
    return lines + [""]


def cell(value, column: str = "") -> str:
    if value is None:
        return ""
    if column == "duration_s":
        return format_duration(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_columns(rows: list[dict], width: int, sort_key: str = "") -> list[str]:
    """The summary's columns that fit `width` uncut: all, or all but the least telling."""
    def needed(column: str) -> int:
        header = len(SUMMARY_COLUMNS[column]) + (2 if column == sort_key else 0)  # and its sort arrow
        return 2 + max([header] + [len(cell(row.get(column), column)) for row in rows])

    columns = list(SUMMARY_COLUMNS)
    if not any((row.get("world_size") or 1) > 1 for row in rows):
        columns.remove("world_size")  # all on one process: a column of ones says nothing
    for column in SUMMARY_DROPPED_FIRST:
        if sum(map(needed, columns)) <= width:
            break
        columns.remove(column)
    return columns


class CompareScreen(OrpoScreen):
    CSS_PATH = "compare.tcss"
    BINDINGS = [
        Binding("escape", "app.back_to_list", "Back", id="compare.back", tooltip="Back to the runs list"),
        Binding("1", "tab('diff')", "Diff", id="compare.tab_diff", show=False, tooltip="Config diff tab"),
        Binding("2", "tab('overlay')", "Overlay", id="compare.tab_overlay", show=False, tooltip="Overlaid curves tab"),
        Binding("3", "tab('samples')", "Samples", id="compare.tab_samples", show=False, tooltip="Samples side by side tab"),
        Binding("4", "tab('summary')", "Summary", id="compare.tab_summary", show=False, tooltip="Summary table tab"),
        Binding("f", "toggle_changed", "Only diffs", id="compare.only", tooltip="Config diff: only changed keys, or all"),
        Binding("b", "next_b", "Next B", id="compare.next_b", show=False, tooltip="Config diff: compare A with the next marked run"),
        Binding("right_square_bracket", "metric(1)", "Metric ▶", id="compare.metric_next", show=False, tooltip="Overlay: next metric"),
        Binding("left_square_bracket", "metric(-1)", "◀ Metric", id="compare.metric_prev", show=False, tooltip="Overlay: previous metric"),
        Binding("m", "toggle_smooth", "Smooth", id="compare.smooth", show=False, tooltip="Overlay: EMA smoothing"),
        Binding("l", "toggle_log", "Log y", id="compare.log", show=False, tooltip="Overlay: logarithmic y axis"),
        Binding("a", "toggle_window", "All/last", id="compare.window", show=False, tooltip="Overlay: all steps or the last 200 reports"),
        Binding("w", "toggle_clock", "Step/time", id="compare.clock", show=False, tooltip="Overlay: align on step or on wall-clock time"),
        Binding("left", "cursor(-1)", "◀ Step", id="compare.cursor_prev", show=False,
                tooltip="Overlay: step cursor to the report before (every run's value at it)"),
        Binding("right", "cursor(1)", "Step ▶", id="compare.cursor_next", show=False, tooltip="Overlay: step cursor to the next report"),
        Binding("home", "cursor_to(0)", "First step", id="compare.cursor_first", show=False,
                tooltip="Overlay: step cursor to the first report"),
        Binding("end", "cursor_to(-1)", "Last step", id="compare.cursor_last", show=False,
                tooltip="Overlay: step cursor to the last report"),
        Binding("p", "playground", "Playground", id="compare.playground", show=False,
                tooltip="Prompt A, B and A's base model side by side (starts their servers)"),
        Binding("x", "export", "Export", id="compare.export", tooltip="Write the summary as CSV into the runs folder's .exports/"),
    ]

    def __init__(self, workspace: Workspace, runs: list[Path], against: Path | None = None) -> None:
        """`runs` to compare; with `against` (a preset file) the diff is runs[0] vs it."""
        super().__init__()
        self.workspace = workspace
        self.runs = runs
        self.against = against
        self.b_index = 1
        self.only_changed = True
        self.metric_index = 0
        self.smooth = self.log_y = self.wall_clock = False
        self.last_n: int | None = None
        self.cursor: float | None = None  # the overlay's step cursor (seconds in wall-clock mode)
        self.series = {run: load_series(run) for run in runs}
        self.rows = [summarize(run) for run in runs]
        self.sort_key, self.sort_reverse = "best_val_loss", False
        self.summary_shown: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="diff"):
            with TabPane("Config diff", id="diff"):
                yield Static(id="diff-title")
                yield FitTable(id="diff-table", cursor_type="row", zebra_stripes=True, elastic=("a", "b"))
            with TabPane("Overlay", id="overlay"):
                yield ChartView(id="overlay-chart")
                yield Static(id="overlay-readout", markup=False)
            with TabPane("Samples", id="samples"), VerticalScroll(id="samples-scroll"):
                # One scroll for the eval samples and the playground's below them: at 80x24
                # neither fits beside the other.
                yield Static(id="samples-title")
                with Horizontal(id="samples-row"):
                    yield Static(id="samples-a", markup=False)
                    yield Static(id="samples-b", markup=False)
                yield Static(id="samples-playground", markup=False)
            with TabPane("Summary", id="summary"):
                with Vertical():
                    yield FitTable(id="summary-table", cursor_type="row", zebra_stripes=True, elastic=("run", "preset"))
                    yield Static(id="summary-note", classes="muted")
        yield FitFooter()

    def on_mount(self) -> None:
        self.title = "Compare"
        self.sub_title = f"{self.runs[0].name} vs preset {self.against.name}" if self.against else f"{len(self.runs)} runs"
        self.show_diff()
        self.show_overlay()
        self.show_samples()
        self.show_summary()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    # ------------------------------------------------------------------ diff

    def show_diff(self) -> None:
        table = self.query_one("#diff-table", DataTable)
        try:
            a = load_side(self.runs[0])
            b = load_side(self.against if self.against else self.runs[self.b_index])
        except CompareError as exc:
            # A run without a readable config has no diff; its curves and summary still do.
            table.clear(columns=True)
            self.query_one("#diff-title", Static).update(Text(f"✖ {exc}", style="bold red"))
            self.notify(f"No config diff: {exc}", severity="warning")
            return
        rows = config_diff(a, b, only_changed=self.only_changed)
        changed = sum(1 for r in rows if r.changed)
        self.query_one("#diff-title", Static).update(Text.assemble(
            ("A ", "bold"), a.label, ("   B ", "bold"), b.label,
            f"   · {changed} differ" + (" (only differences shown: f for all)" if self.only_changed else " (f: only differences)")))
        table.clear(columns=True)
        for key, label in (("key", "key"), ("a", "A"), ("b", "B")):
            table.add_column(label, key=key)
        for r in rows:
            style = "bold yellow" if r.changed else ("dim" if not self.only_changed else "")
            key = Text(r.key, style="italic" if r.derived else "")
            table.add_row(key, Text(r.a, style=style), Text(r.b, style=style))

    def action_toggle_changed(self) -> None:
        self.only_changed = not self.only_changed
        self.show_diff()

    def action_next_b(self) -> None:
        if len(self.runs) > 2 and self.against is None:
            self.b_index = self.b_index % (len(self.runs) - 1) + 1
            self.show_diff()
            self.show_samples()

    # ------------------------------------------------------------------ overlay

    def run_names(self) -> dict[Path, str]:
        """Each run's label, or its folder name where two runs share a label (two runs of
        one preset), so the legend tells every run apart."""
        labels = {run: run_label(run.name) for run in self.runs}
        shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
        return {run: run.name if label in shared else label for run, label in labels.items()}

    def overlay_series(self, _width: int = 0) -> list[ChartSeries]:
        kind, name = OVERLAY_METRICS[self.metric_index].split(" ", 1)
        names = self.run_names()
        out = []
        for run, series in self.series.items():
            track = series.track(kind, name)
            if track is None:
                continue
            xs, ys = list(track.steps), list(track.values)
            if self.wall_clock and len(track.times):
                start = track.times[0]
                xs = [t - start for t in track.times]
            if self.last_n:
                xs, ys = last_n(xs, ys, self.last_n)
            if self.smooth and kind == "train":
                ys = ema(ys, 0.2)
            out.append(ChartSeries(names[run], xs, ys, style="points" if kind == "val" else "line"))
        return out

    def show_overlay(self) -> None:
        metric = OVERLAY_METRICS[self.metric_index]
        options = (self.metric_index, self.smooth, self.log_y, self.last_n, self.wall_clock)
        if self.is_mounted and self.query("#overlay-readout"):
            self.show_readout()
        self.query_one("#overlay-chart", ChartView).update_series(
            self.overlay_series, version=options, title=f"{metric}  ([ ] metric · m smooth · l log · a range · w step/time)",
            log_y=self.log_y, xlabel="seconds since start" if self.wall_clock else "step",
            empty=WAITING if any(row.get("state") in ACTIVE for row in self.rows) else NO_VALUES)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("cursor", "cursor_to"):
            # Elsewhere left and right belong to the tabs and tables.
            return self.query_one(TabbedContent).active == "overlay"
        return True

    @on(TabbedContent.TabActivated)
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "overlay":
            # Focus off the tab strip, whose own left/right would switch tabs.
            chart = self.query_one("#overlay-chart", ChartView)
            chart.can_focus = True
            chart.focus()
        self.refresh_bindings()

    def cursor_positions(self) -> list[float]:
        return sorted({x for s in self.overlay_series() for x in s.steps})

    def action_cursor(self, delta: int) -> None:
        x = cursor_move(self.cursor_positions(), self.cursor, delta)
        if x is not None:
            self.move_cursor(x)

    def action_cursor_to(self, index: int) -> None:
        xs = self.cursor_positions()
        if xs:
            self.move_cursor(xs[index])

    def move_cursor(self, x: float | None) -> None:
        self.cursor = x
        self.query_one("#overlay-chart", ChartView).set_cursor(x)
        self.show_readout()

    def readout(self, x: float) -> str:
        """The cursor's position and each run's value there (or at its last report before,
        with where that was), exactly as in metrics.jsonl."""
        unit = "s" if self.wall_clock else "step"
        parts = [f"{unit} {x:g}" if self.wall_clock else f"step {int(x)}"]
        for s in self.overlay_series():
            at = index_at_or_before(list(s.steps), x)
            if at is None:
                parts.append(f"{s.label} –")
                continue
            seen = "" if s.steps[at] == x else f" @{s.steps[at]:g}"
            parts.append(f"{s.label} {s.values[at]:.6g}{seen}")
        return "  ·  ".join(parts)

    def show_readout(self) -> None:
        text = (Text(self.readout(self.cursor), style="bold") if self.cursor is not None
                else Text("←/→ step cursor: every run's value at one step", style="dim"))
        self.query_one("#overlay-readout", Static).update(text)

    def action_metric(self, delta: int) -> None:
        self.metric_index = (self.metric_index + delta) % len(OVERLAY_METRICS)
        self.show_overlay()

    def action_toggle_smooth(self) -> None:
        self.smooth = not self.smooth
        self.show_overlay()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.show_overlay()

    def action_toggle_window(self) -> None:
        self.last_n = None if self.last_n else 200
        self.show_overlay()

    def action_toggle_clock(self) -> None:
        self.wall_clock = not self.wall_clock
        self.show_overlay()

    # ------------------------------------------------------------------ samples

    def show_samples(self) -> None:
        self.show_playground()
        if len(self.runs) < 2:
            self.query_one("#samples-title", Static).update("Samples are compared between two runs.")
            return
        a, b = self.runs[0], self.runs[self.b_index]
        sa, sb = self.series[a].samples, self.series[b].samples
        step = nearest_common_step(sa, sb)
        title = self.query_one("#samples-title", Static)
        if step is None:
            title.update("No sample generations in these runs yet (the trainer logs them at each evaluation once samples are enabled).")
            return
        title.update(f"Samples at step {step} (nearest step both runs logged)")
        for widget_id, run, samples in (("#samples-a", a, sa), ("#samples-b", b, sb)):
            near = min({s.get("step") for s in samples}, key=lambda x: abs(x - step))
            lines = [run.name, ""]
            for s in samples:
                if s.get("step") == near:
                    lines += [f"» {s.get('prompt', '')}", f"  {s.get('completion', '')}", ""]
            self.query_one(widget_id, Static).update("\n".join(lines))

    def shown_pair(self) -> list[Path]:
        """The runs the samples tab and the playground are about: A and B (or the one run)."""
        return [self.runs[0]] + ([self.runs[self.b_index]] if len(self.runs) > 1 else [])

    def show_playground(self) -> None:
        """The exchanges saved from the playground, beside the eval samples: each once, though
        it was saved into every run it involved."""
        seen, shown, notes = set(), [], []
        for run in self.shown_pair():
            entries, skipped = read_entries(run)
            notes += [f"{run.name}/{note}" for note in skipped]
            for entry in entries:
                key = (entry.get("time"), entry["prompt"])
                if key not in seen:
                    seen.add(key)
                    shown.append(entry)
        # The newest first, whichever run it was saved in.
        shown.sort(key=lambda e: e.get("time") if isinstance(e.get("time"), (int, float)) else 0, reverse=True)
        lines = [line for entry in shown for line in playground_lines(entry)]
        head = f"Playground: {len(seen)} saved prompt{'s' if len(seen) != 1 else ''}" if seen else (
            "Playground: nothing saved yet (p opens it; ctrl+s there saves a prompt and its answers)")
        self.query_one("#samples-playground", Static).update(shown_text("\n".join([head, *notes, "", *lines]).rstrip()))

    def action_playground(self) -> None:
        from tui.screens.playground import PlaygroundScreen

        self.app.push_screen(PlaygroundScreen(self.workspace, self.shown_pair()))

    # ------------------------------------------------------------------ summary

    def show_summary(self) -> None:
        table = self.query_one("#summary-table", DataTable)
        # The pane's width (the screen's, less its padding, while the tab is hidden).
        columns = summary_columns(self.rows, table.size.width or self.size.width - 2, self.sort_key)
        self.summary_shown = columns
        table.clear(columns=True)
        for column in columns:
            arrow = (" ▼" if self.sort_reverse else " ▲") if column == self.sort_key else ""
            table.add_column(SUMMARY_COLUMNS[column] + arrow, key=column)

        def key(row):
            value = row.get(self.sort_key)
            return (value is None, value if value is not None else 0)

        for row in sorted(self.rows, key=key, reverse=self.sort_reverse):
            table.add_row(*(cell(row.get(c), c) for c in columns))
        hidden = len(summary_columns(self.rows, 10**9, self.sort_key)) - len(columns)
        more = f" · {hidden} more column{'s' if hidden > 1 else ''} when wider (the CSV has all)" if hidden else ""
        self.query_one("#summary-note", Static).update(f"click a column header (or enter on it) to sort · x exports CSV{more}")

    @on(FitTable.WidthChanged, "#summary-table")
    def summary_resized(self, event: FitTable.WidthChanged) -> None:
        if summary_columns(self.rows, event.width, self.sort_key) != self.summary_shown:
            self.show_summary()

    @on(DataTable.HeaderSelected, "#summary-table")
    def header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_summary(str(event.column_key.value))

    def sort_summary(self, column: str) -> None:
        """Sort by a column; choosing the same column again flips the order."""
        self.sort_reverse = not self.sort_reverse if column == self.sort_key else False
        self.sort_key = column
        self.show_summary()

    def action_export(self) -> None:
        # Not among the run folders: `orpo-tui summary runs/*` must not trip over exports.
        target = self.workspace.runs_dir / EXPORTS_DIR / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, summaries_to_csv(self.rows))
        except OSError as exc:
            self.notify(f"Not exported: {exc.filename or target}: {exc.strerror or exc}", severity="error", timeout=10)
            return
        self.notify(f"Wrote {target}")

    def commands(self):
        yield SystemCommand("Playground", "Prompt A, B and A's base model side by side", self.action_playground)
        yield SystemCommand("Export summary CSV", "Write the summary table as CSV into the runs folder's .exports/", self.action_export)
        yield SystemCommand("Toggle only differences", "Config diff: changed keys only, or all", self.action_toggle_changed)
