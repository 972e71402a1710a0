"""One run, live: ORPO curves, progress with ETA, what the run costs the machine, health
alarms, the end of train.log and the latest sample generations. Everything about the run is
read from the run directory, tailed by offset; the machine's figures come from psutil."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Header, ProgressBar, Static

from trainer.pure.crash_cause import LogCause
from trainer.pure.events import MetricsTail
from trainer.pure.metrics import LOSS, metric_label
from trainer.pure.rank_status import RankState, rank_states, world_size
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import DAMAGED, effective_state, read_status, run_end_time
from trainer.pure.states import ACTIVE, RESUMABLE, RunState
from tui.alarms import health_alarms, swap_alarm
from tui.chart_specs import CHARTS, chart_series
from tui.charts import NO_VALUES, WAITING
from tui.messages import RunResumeRequested, RunStopRequested
from tui.resources import TrainerProcess, resource_line, system_memory
from tui.runs_index import format_duration
from tui.screens.base import OrpoScreen
from tui.series import RunSeries, cursor_move, index_at_or_before
from tui.widgets.chart_view import ChartView
from tui.widgets.fit_footer import FitFooter
from tui.widgets.resume_ranks import ask_resume_ranks
from tui.workspace import Workspace

LOG_TAIL_BYTES = 64 * 1024
CHART_MIN_INTERVAL = 5.0  # seconds between chart redraws while data streams in
RESOURCES_INTERVAL = CHART_MIN_INTERVAL  # the resource line moves with the charts
# A metrics file up to this size (about a thousand reports, read in tens of milliseconds) is
# read before the screen's first frame, which then holds the charts.
INLINE_METRICS_BYTES = 512 * 1024


def tail_text(path: Path, lines: int) -> str:
    """The last lines of a log, reading only its end however large it grows."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(size - LOG_TAIL_BYTES, 0))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _index_of(track, step: int) -> int | None:
    if track is None:
        return None
    at = bisect_left(track.steps, step)
    return at if at < len(track.steps) and track.steps[at] == step else None


def _index_at_or_before(track, step: int) -> int | None:
    return None if track is None else index_at_or_before(track.steps, step)


def ranks_text(ranks: list[RankState]) -> Text:
    """`2 ranks · rank 0 step 12 (pid 4241 alive) · rank 1 …`; a rank whose process is gone
    while the others live is what a user must see first."""
    text = Text(f"{len(ranks)} ranks", style="bold")
    for r in ranks:
        text.append(" · ")
        text.append(r.short(), style="red" if r.alive is False and any(o.alive for o in ranks) else "")
    return text


def _value(value: float) -> str:
    return f"{value:.6g}"


class MonitorScreen(OrpoScreen):
    CSS_PATH = "monitor.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("escape", "app.back_to_list", "Back", id="monitor.back", tooltip="Back to the runs list"),
        Binding("m", "toggle_smooth", "Smooth", id="monitor.smooth", show=False, tooltip="Exponential moving average on/off"),
        Binding("l", "toggle_log", "Log y", id="monitor.log", show=False, tooltip="Logarithmic y axis on/off"),
        Binding("a", "toggle_window", "All/last", id="monitor.window", show=False, tooltip="All steps or the last 200 reports"),
        Binding("x", "stop", "Stop", id="monitor.stop", tooltip="Stop: SIGINT, then SIGTERM, then SIGKILL"),
        Binding("u", "resume", "Resume", id="monitor.resume", tooltip="Resume a stopped or crashed run"),
        Binding("U", "resume_ranks", "Resume on N ranks", id="monitor.resume_ranks", show=False,
                tooltip="Resume on another number of ranks (distributed.np)"),
        Binding("g", "next_rank_log", "Rank log", id="monitor.rank_log", show=False,
                tooltip="Log pane: the next rank's log (train.log is rank 0's)"),
        Binding("left", "cursor(-1)", "◀ Step", id="monitor.cursor_prev", show=False,
                tooltip="Step cursor: the report before (shows every value at that step)"),
        Binding("right", "cursor(1)", "Step ▶", id="monitor.cursor_next", show=False, tooltip="Step cursor: the next report"),
        Binding("home", "cursor_to(0)", "First step", id="monitor.cursor_first", show=False,
                tooltip="Step cursor: the first report"),
        Binding("end", "cursor_to(-1)", "Last step", id="monitor.cursor_last", show=False,
                tooltip="Step cursor: the last report"),
        Binding("left_square_bracket", "samples(-1)", "◀ Samples", id="monitor.samples_prev", show=False,
                tooltip="Samples of the evaluation before the one shown"),
        Binding("right_square_bracket", "samples(1)", "Samples ▶", id="monitor.samples_next", show=False,
                tooltip="Samples of the next evaluation (the newest follows the run again)"),
    ]

    def __init__(self, workspace: Workspace, run_dir: Path) -> None:
        super().__init__()
        self.workspace = workspace
        self.run_dir = run_dir
        self.series = RunSeries()
        self.tail = MetricsTail(RunFolder(run_dir).metrics)
        self.cause = LogCause(RunFolder(run_dir).log)
        self.smooth = False
        self.log_y = False
        self.last_n: int | None = None
        self._drawn_version = -1
        self._drawn_at = 0.0
        self.total_steps = 0
        self._log_key: tuple | None = None
        self.error: str | None = None
        self._shown: dict[str, Text | str] = {}
        self.samples_step: int | None = None  # None: the newest evaluation, following the run
        self.cursor_step: int | None = None  # None: no step cursor
        self.active = True  # whether the run may still log: an empty chart waits for data
        self._drawn_active: bool | None = None
        self._trainer: TrainerProcess | None = None
        self._resources_due = 0.0
        self.world_size = 1
        self.log_rank = 0  # whose log the log pane shows

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="top"):
            with Horizontal(id="progress-line"):
                # Our own ETA (from the run's step times), not the bar's: the bar's clock starts when
                # the screen opens and ticks a redraw every second even when nothing changes.
                yield ProgressBar(id="progress", show_eta=False, total=1)
                yield Static(id="state")
            yield Static(id="resources", markup=False)
            yield Static(id="ranks", markup=False)
            yield Static(id="alarms")
            yield Static(id="readout", markup=False)
        with Grid(id="charts"):
            for spec in CHARTS:
                yield ChartView(id=f"chart-{spec.key}")
        with Horizontal(id="bottom"):
            yield Static(id="log", markup=False)
            yield Static(id="samples", markup=False)
        yield FitFooter()

    def on_mount(self) -> None:
        self.title, self.sub_title = "Monitor", self.run_dir.name
        status = read_status(self.run_dir) or {}
        self.show_status(status)
        self.show_ranks(status)
        try:
            size = RunFolder(self.run_dir).metrics.stat().st_size
        except OSError:
            size = 0
        if size <= INLINE_METRICS_BYTES:
            # The first frame shows the charts: one layout and one paint, not two.
            self.start_polling(self.tail.read_new())
        else:
            # The screen paints first; a long run's metrics (20k reports take a second to
            # parse) are read in a thread, and the charts drawn once they are in.
            self.call_after_refresh(self.catch_up)

    @work(thread=True, exit_on_error=False, group="monitor-catch-up")
    def catch_up(self) -> None:
        events = self.tail.read_new()
        self.app.call_from_thread(self._caught_up, events)

    def _caught_up(self, events: list[dict]) -> None:
        if self.is_mounted:
            self.start_polling(events)

    def start_polling(self, events: list[dict]) -> None:
        """Show the metrics read so far, then follow the run."""
        self.series.add(events)
        self.poll()
        # Before the first layout the log box has no height to fill yet.
        self.call_after_refresh(self.show_log)
        self.set_interval(1.0, self.poll)

    # ------------------------------------------------------------------ polling

    def poll(self) -> None:
        events = self.tail.read_new()
        if events:
            self.series.add(events)
        status = read_status(self.run_dir) or {}
        self.show_status(status)
        self.show_resources(status)
        self.show_ranks(status)
        # Six charts cost tens of milliseconds to draw on a slow CPU; curves that move every
        # report need not move more than every few seconds, so idle watching stays cheap.
        due = time.monotonic() - self._drawn_at >= CHART_MIN_INTERVAL
        # A run that ends turns its empty charts from "waiting" to "none recorded" at once.
        if (self.series.version != self._drawn_version and due) or self.active != self._drawn_active:
            self.redraw()
        # Samples are text, cheap to show: they need not wait for the next chart redraw.
        self.show_samples()
        self.show_readout()
        self.show_log()

    def show_log(self) -> None:
        """Re-read the end of train.log only when it or the box changed."""
        try:
            height = self.query_one("#log", Static).size.height
        except NoMatches:  # a refresh callback that outlived its screen (a double start)
            return
        log = RunFolder(self.run_dir).rank_log(self.log_rank)
        try:
            st = log.stat()
            key = (st.st_mtime_ns, st.st_size, height, self.log_rank)
        except OSError:
            key = None
        if key == self._log_key and key is not None:
            return
        self._log_key = key
        # Another rank's log names itself on its first row: rank 0's train.log is the default.
        rows = max(height - (1 if self.log_rank else 0), 1)
        text = tail_text(log, rows) or f"{log.name} is empty"
        self.set_text("#log", f"── {log.name} (rank {self.log_rank}; g: next rank) ──\n{text}" if self.log_rank else text)

    def show_ranks(self, status: dict) -> None:
        """A distributed run's world size and each rank's state, one line: its last reported
        step and whether its process lives. Hidden for a run on one process."""
        ranks = rank_states(self.run_dir, status)
        self.world_size = world_size(status) or 1
        if self.log_rank >= self.world_size:  # resumed on fewer ranks
            self.log_rank = 0
            self.show_log()
        box = self.query_one("#ranks", Static)
        if box.display != bool(ranks):
            box.display = bool(ranks)
        if ranks:
            self.set_text("#ranks", ranks_text(ranks))

    def redraw(self) -> None:
        self._drawn_version, self._drawn_at = self.series.version, time.monotonic()
        self._drawn_active = self.active
        for spec in CHARTS:
            # A callable source: the chart builds its series only when it really redraws.
            self.query_one(f"#chart-{spec.key}", ChartView).update_series(
                lambda _width, spec=spec: chart_series(self.series, spec, smooth=self.smooth, last_n_reports=self.last_n),
                version=(self.series.version, self.smooth, self.last_n), title=spec.title, log_y=self.log_y,
                empty=WAITING if self.active else NO_VALUES)
        self.show_alarms()
        self.show_samples()

    def show_resources(self, status: dict) -> None:
        """The trainer's CPU% and RSS, MLX's memory at the last report, the system's available
        memory and swap: every RESOURCES_INTERVAL, and a second after the first look (CPU%
        needs two). A run that is not active says so instead of showing stale figures."""
        state = effective_state(status or None)
        pid = status.get("pid")
        active = state in ACTIVE and isinstance(pid, int)
        now = time.monotonic()
        # A run that just ended says so at once: its last CPU% must not stay on screen.
        if now < self._resources_due and active == (self._trainer is not None):
            return
        usage = system = None
        if active:
            if self._trainer is None or self._trainer.pid != pid:
                self._trainer = TrainerProcess(pid)
            usage, system = self._trainer.usage(), system_memory()
        else:
            self._trainer = None
        first_look = usage is not None and usage.cpu_percent is None
        self._resources_due = now + (1.0 if first_look else RESOURCES_INTERVAL)
        line = resource_line(str(state), active, usage, system, self.series.last_train)
        self.set_text("#resources", Text(line, style="" if active else "dim"))
        if active:  # the swap the app sampled since the last look
            self.show_alarms()

    def show_alarms(self) -> None:
        lines = [f"✖ {self.error}"] if self.error else []
        swap = swap_alarm(self.workspace.watch.swap_samples(self.run_dir))
        lines += [f"⚠ {swap.message}"] if swap else []
        lines += [f"⚠ {a.message}" for a in health_alarms(self.series, total_steps=self.total_steps or None)]
        # Auto height: a layout pass, but only when the alarms really changed.
        self.set_text("#alarms", Text("\n".join(lines), style="bold red") if lines else Text("no alarms", style="dim"), layout=True)

    def set_text(self, selector: str, text: Text | str, layout: bool = False) -> None:
        """Update a text box only when its content changes: every repaint of this screen
        costs real CPU on a slow machine, and most ticks change nothing."""
        if self._shown.get(selector) != text:
            self._shown[selector] = text
            self.query_one(selector, Static).update(text, layout=layout)

    def show_status(self, status: dict) -> None:
        written = effective_state(status or None)
        self.active = written in ACTIVE
        state = self.workspace.stop_phase.get(self.run_dir) or written
        step, total = int(status.get("step") or 0), int(status.get("total_steps") or 0)
        self.total_steps = total
        bar = self.query_one("#progress", ProgressBar)
        if (bar.total, bar.progress) != (max(total, 1), step):
            # Never an unknown total: that animates the bar at 15 frames a second.
            bar.update(total=max(total, 1), progress=step)
        started = status.get("started_at")
        ended = run_end_time(self.run_dir, written, status)
        elapsed = ((ended or time.time()) - started) if started else None
        parts = [f"{state}", f"step {step}/{total}", format_duration(elapsed)]
        if state == RunState.RUNNING and (eta := self.eta(step, total)) is not None:
            parts.append(f"ETA {format_duration(eta)}")
        # Why a crashed run died, else a damaged status or metrics file is the run's problem
        # to show, like an error.
        cause = self.cause.current() if state == RunState.CRASHED else None
        error = (f"crashed: {cause}" if cause else None) or status.get("error") or status.get(DAMAGED) or self.tail.problem
        if error != self.error:
            self.error = error
            self.show_alarms()
        style = "bold red" if state in (RunState.FAILED, RunState.CRASHED) else ""
        # A fixed-size box: no layout pass, which would repaint every chart.
        self.set_text("#state", Text("  ·  ".join(p for p in parts if p), style=style))

    def eta(self, step: int, total: int) -> float | None:
        """Seconds left at the pace of the last reports (validation pauses included)."""
        track = self.series.track("train", LOSS)
        if track is None or len(track.steps) < 2 or total <= step:
            return None
        first = max(len(track.steps) - 20, 0)
        steps = track.steps[-1] - track.steps[first]
        seconds = track.times[-1] - track.times[first]
        return (total - step) * seconds / steps if steps > 0 and seconds > 0 else None

    def sample_steps(self) -> list[int]:
        return sorted({s.get("step") for s in self.series.samples if isinstance(s.get("step"), int)})

    def show_samples(self) -> None:
        steps = self.sample_steps()
        if not steps:
            self.set_text("#samples", "No sample generations yet.")
            return
        step = self.samples_step if self.samples_step in steps else steps[-1]
        latest = [s for s in self.series.samples if s.get("step") == step]
        where = f" ({steps.index(step) + 1}/{len(steps)})" if len(steps) > 1 else ""
        lines = [f"» {s.get('prompt', '')}\n  {s.get('completion', '')}" for s in latest]
        self.set_text("#samples", "\n".join([f"samples at step {step}{where}:", *lines]))

    def action_samples(self, delta: int) -> None:
        steps = self.sample_steps()
        if not steps:
            return
        at = steps.index(self.samples_step) if self.samples_step in steps else len(steps) - 1
        at = min(max(at + delta, 0), len(steps) - 1)
        self.samples_step = None if at == len(steps) - 1 else steps[at]
        self.show_samples()

    # ------------------------------------------------------------------ step cursor

    def cursor_steps(self) -> list[int]:
        """Every step with a train or val report."""
        steps: set[int] = set()
        for kind in ("train", "val"):
            track = self.series.track(kind, LOSS)
            if track is not None:
                steps.update(track.steps)
        return sorted(steps)

    def action_cursor(self, delta: int) -> None:
        step = cursor_move(self.cursor_steps(), self.cursor_step, delta)
        if step is not None:
            self.move_cursor(step)

    def action_cursor_to(self, index: int) -> None:
        steps = self.cursor_steps()
        if steps:
            self.move_cursor(steps[index])

    def move_cursor(self, step: int | None) -> None:
        self.cursor_step = step
        for view in self.query(ChartView):
            view.set_cursor(step)
        self.show_readout()

    def readout(self, step: int) -> str:
        """The step, its wall time and every charted value at it: train values of that
        report, and each val value of that step (or of the last evaluation before it, with
        its step)."""
        parts = [f"step {step}"]
        when = None
        values = []
        for spec in self.visible_charts():
            for name in spec.train:
                track = self.series.track("train", name)
                at = _index_of(track, step)
                if at is not None:
                    when = when or track.times[at]
                    values.append(f"{metric_label(name)} {_value(track.values[at])}")
            for name in spec.val:
                track = self.series.track("val", name)
                at = _index_at_or_before(track, step)
                if at is not None:
                    if track.steps[at] == step:
                        when = when or track.times[at]
                    seen = "" if track.steps[at] == step else f" @{track.steps[at]}"
                    values.append(f"val {metric_label(name)} {_value(track.values[at])}{seen}")
        if when is not None and math.isfinite(when):
            parts.append(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)))
        return "  ·  ".join(parts + values)

    def visible_charts(self):
        return [spec for spec in CHARTS if self.query_one(f"#chart-{spec.key}", ChartView).display]

    def show_readout(self) -> None:
        if self.cursor_step is None:
            self.set_text("#readout", Text("←/→ step cursor: every value at one step", style="dim"))
        else:
            self.set_text("#readout", Text(self.readout(self.cursor_step), style="bold"))

    # ------------------------------------------------------------------ toggles and actions

    def _toggled(self, message: str) -> None:
        self.redraw()
        self.notify(message, timeout=2)

    def action_toggle_smooth(self) -> None:
        self.smooth = not self.smooth
        self._toggled(f"smoothing {'on (EMA)' if self.smooth else 'off'}")

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self._toggled(f"log-scale y {'on' if self.log_y else 'off'}")

    def action_toggle_window(self) -> None:
        self.last_n = None if self.last_n else 200
        self._toggled("last 200 reports" if self.last_n else "all steps")

    def action_stop(self) -> None:
        self.post_message(RunStopRequested(self.run_dir))

    def action_next_rank_log(self) -> None:
        if self.world_size < 2:
            self.notify("This run trains on one process: train.log is its only log.", timeout=3)
            return
        self.log_rank = (self.log_rank + 1) % self.world_size
        self.show_log()

    def action_resume_ranks(self) -> None:
        state = effective_state(read_status(self.run_dir))
        if state in RESUMABLE:
            ask_resume_ranks(self, self.run_dir, self.world_size)
        else:
            self.notify(f"A {state} run cannot be resumed.", severity="warning")

    def action_resume(self) -> None:
        state = effective_state(read_status(self.run_dir))
        if state in RESUMABLE:
            self.post_message(RunResumeRequested(self.run_dir))
        else:
            self.notify(f"A {state} run cannot be resumed.", severity="warning")

    def commands(self):
        yield SystemCommand("Toggle smoothing", "EMA smoothing of the training curves", self.action_toggle_smooth)
        yield SystemCommand("Toggle log scale", "Logarithmic y axis", self.action_toggle_log)
        yield SystemCommand("Toggle all / last steps", "Show all steps or only the last 200 reports", self.action_toggle_window)
        yield SystemCommand("Stop run", "SIGINT, then SIGTERM, then SIGKILL", self.action_stop)
        yield SystemCommand("Resume run", "Resume this stopped or crashed run", self.action_resume)
        yield SystemCommand("Resume on N ranks", "Resume this run on another number of ranks", self.action_resume_ranks)
        yield SystemCommand("Next rank's log", "Show the next rank's log in the log pane", self.action_next_rank_log)
