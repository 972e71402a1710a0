"""The orpo-tui application and the one factory the CLI and the tests both use."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import AwaitMount
from textual.worker import Worker, WorkerState

from trainer.pure.run_end import APP_NAME, RunEnd
from trainer.pure.runs import list_runs
from trainer.pure.states import RunState
from trainer.pure.user_settings import NotifySettings
from tui.crash_report import crash_line, write_crash_file
from tui.launcher import LaunchError, stop_run
from tui.messages import RunResumeRequested, RunStartRequested, RunStopRequested
from tui.playground import stop_all_servers
from tui.screens.base import OrpoScreen
from tui.screens.preset_list import PresetListScreen
from tui.screens.queue import QueueScreen
from tui.screens.runs import RunsScreen
from tui.terminal_notify import notification
from tui.warm_up import thaw, warm_up
from tui.workspace import Workspace

WARM_UP_AFTER_S = 0.5
MODE_SCREENS = {"presets": PresetListScreen, "runs": RunsScreen, "queue": QueueScreen}
WATCH_SECONDS = 2.0  # how often the app looks for runs that ended, whatever screen is open
END_SEVERITY = {RunState.COMPLETED: "information", RunState.STOPPED: "warning"}  # else "error"


class OrpoApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "orpo-tui"
    SUB_TITLE = "ORPO fine-tuning on MLX"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", tooltip="Quit orpo-tui (runs keep training)", priority=True),
        Binding("f1,question_mark", "toggle_keys", "Keys", id="app.keys", tooltip="Show or hide the key help panel"),
        Binding("f2", "go('presets')", "Presets", id="app.presets", tooltip="The preset list"),
        Binding("f3", "go('runs')", "Runs", id="app.runs", tooltip="Every run, live"),
        Binding("f4", "go('queue')", "Queue", id="app.queue", tooltip="The sweep queue"),
    ]

    def __init__(self, presets_dir: Path, runs_dir: Path, notify: NotifySettings | None = None,
                 settings_problems: Iterable[str] = ()) -> None:
        super().__init__()
        self.workspace = Workspace(presets_dir, runs_dir)
        self.crash: str | None = None  # the one line to print after an unexpected error
        self.end_notices = notify or NotifySettings()
        self.settings_problems = list(settings_problems)
        self.holding_frames = True  # see switch_mode
        # Added here rather than in MODES: the list screens are built with the workspace.
        for mode, screen in MODE_SCREENS.items():
            self.add_mode(mode, partial(self.mode_screen, screen))

    def mode_screen(self, screen_class: type[OrpoScreen]) -> OrpoScreen:
        """A mode's list screen, made the first time the mode is shown. Textual restyles the
        whole app and parses all its CSS again, twice, when it switches to a screen that has
        not seen the app's latest CSS refresh; a screen made now, styled as it mounts, has
        missed none. Marked so, a first F3 or a first started run skips that work."""
        screen = screen_class(self.workspace)
        screen._css_update_count = self._css_update_count
        return screen

    def switch_mode(self, mode: str) -> AwaitMount:
        """Textual's, without its hold on frames (delay_update). The hold is meant to hide a
        screen while it mounts, but the screens here paint only once mounted, and the timer
        that ends the hold runs late while the loop is busy mounting: the first frame of the
        runs list (F3), or of a started run's monitor, was drawn and thrown away, and shown
        only with the next one."""
        self.holding_frames = False
        try:
            return super().switch_mode(mode)
        finally:
            self.holding_frames = True

    def delay_update(self, delay: float = 0.05) -> None:
        if self.holding_frames:  # still held where Textual asks outside a mode switch
            super().delay_update(delay)

    def on_mount(self) -> None:
        self.switch_mode("presets")
        for line in self.settings_problems:
            self.notify(line, severity="warning", timeout=15)
        self.set_interval(WATCH_SECONDS, self.watch_runs)
        # Once the first screen shows: what opening the editor or a monitor would pay first.
        self.set_timer(WARM_UP_AFTER_S, lambda: self.run_worker(warm_up(self), name="warm up", exit_on_error=False))

    def on_unmount(self) -> None:
        thaw()
        stop_all_servers()  # the playground's, whichever screen was left open

    # ------------------------------------------------------------------ run ends

    @work(thread=True, exit_on_error=False, exclusive=True, group="watch runs", name="watch runs")
    def watch_runs(self) -> None:
        """Tell of every watched run that ended; sample the swap while any trains."""
        watch = self.workspace.watch
        ended = watch.check()
        if watch.active:
            from tui.resources import system_memory  # psutil: only once something trains

            watch.record_swap(system_memory().swap_used)
        for end in ended:
            self.call_from_thread(self.tell_run_end, end)

    def tell_run_end(self, end: RunEnd) -> None:
        """A toast in the app; and, unless `notify_terminal = false`, the terminal's bell and
        a desktop notification (OSC 9 and OSC 777, through tmux when inside it)."""
        self.notify(end.message, title="Run ended", severity=END_SEVERITY.get(end.state, "error"), timeout=15)
        if self.end_notices.terminal:
            in_tmux = bool(os.environ.get("TMUX"))
            self.write_to_terminal(notification(APP_NAME, end.message, in_tmux, self.end_notices.terminal))

    def write_to_terminal(self, text: str) -> None:
        """Bytes for the terminal itself, queued on the driver's writer between frames, the
        way Textual writes its own bell and clipboard (OSC 52) sequences: nothing moves the
        cursor, so the screen is untouched."""
        if self._driver is not None and not self.is_headless:
            self._driver.write(text)

    def action_go(self, mode: str) -> None:
        """F2/F3/F4 go to that mode's list, as the footer says, from any screen. Views
        opened from a list (a monitor, a comparison) are closed on the way, so the way back
        never leads through stale ones; an editor with unsaved changes asks first. A dialog
        on top is answered first: its caller waits for its result."""
        if not isinstance(self.screen, OrpoScreen):
            return
        if self.current_mode != mode:
            # A screen left open in that mode (an editor: ctrl+r leaves it behind) is left
            # now, through its own question if it holds unsaved work.
            self.switch_mode(mode)
        self.back_to_list()

    def action_back_to_list(self) -> None:
        """Esc on a view opened from a list: its parent is always that list."""
        self.back_to_list()

    def back_to_list(self, then: Callable[[], object] | None = None) -> None:
        """Leave every screen above the current mode's list, each through its `leave()`,
        then run `then`; stops (and skips `then`) where the user keeps editing."""
        screen = self.screen
        if len(self.screen_stack) <= 1 or not isinstance(screen, OrpoScreen):
            if then is not None and len(self.screen_stack) <= 1:
                then()
            return

        def left() -> None:
            if self.screen is screen:
                self.pop_screen()
            self.back_to_list(then)

        screen.leave(then=left)

    # ------------------------------------------------------------------ runs

    def open_monitor(self, run_dir: Path) -> None:
        """A run just started: its monitor, straight above the runs list (Esc goes to the
        list, never to a view left open there earlier), with the new run selected."""
        from tui.screens.monitor import MonitorScreen

        self.switch_mode("runs")
        runs_list = self.screen_stack[0]
        if isinstance(runs_list, RunsScreen):
            runs_list.select_run(run_dir)
        self.back_to_list(then=lambda: self.push_screen(MonitorScreen(self.workspace, run_dir)))

    @on(RunStartRequested)
    def _start_requested(self, message: RunStartRequested) -> None:
        self.start_run(message.preset, message.overrides)

    @on(RunResumeRequested)
    def _resume_requested(self, message: RunResumeRequested) -> None:
        self.resume_run(message.run_dir, message.overrides)

    @on(RunStopRequested)
    def _stop_requested(self, message: RunStopRequested) -> None:
        self.stop_run(message.run_dir)

    @work(thread=True, exit_on_error=False, name="start run")
    def start_run(self, preset: Path, overrides: list[str] | None = None) -> None:
        try:
            run_dir = self.workspace.launcher.start(preset, self.workspace.runs_dir, overrides or [])
        except LaunchError as exc:
            self.call_from_thread(self.notify, f"Not started: {exc}", severity="error", timeout=10)
            return
        self.call_from_thread(self.workspace.watch.expect, run_dir)
        # The monitor first: a note posted before it would be drawn on the screen being left,
        # then drawn again on the monitor, on the way to the monitor's first frame.
        self.call_from_thread(self.open_monitor, run_dir)
        self.call_from_thread(self.notify, f"Started {run_dir.name}")

    @work(thread=True, exit_on_error=False, name="resume run")
    def resume_run(self, run_dir: Path, overrides: list[str] | None = None) -> None:
        try:
            self.workspace.launcher.resume(run_dir, overrides or [])
        except LaunchError as exc:
            self.call_from_thread(self.notify, f"Not resumed: {exc}", severity="error", timeout=10)
            return
        self.call_from_thread(self.workspace.watch.expect, run_dir)
        self.call_from_thread(self.notify, f"Resumed {run_dir.name}")

    @work(thread=True, exit_on_error=False, name="stop run")
    def stop_run(self, run_dir: Path) -> None:
        stop_phase = self.workspace.stop_phase

        def phase(name: str, wait: float) -> None:
            stop_phase[run_dir] = f"stopping: {name} sent, waiting ≤{wait:.0f}s"

        ended = stop_run(run_dir, phase)
        stop_phase.pop(run_dir, None)
        message = {"": "was not running", "SIGINT": "stopped after saving (SIGINT)",
                   "SIGTERM": "stopped at once (SIGTERM); last checkpoint kept",
                   "SIGKILL": "killed (SIGKILL); resumes from its last checkpoint"}[ended]
        severity = "warning" if ended in ("SIGTERM", "SIGKILL") else "information"
        self.call_from_thread(self.notify, f"{run_dir.name} {message}", severity=severity)

    async def action_quit(self) -> None:
        """Quitting never drops unsaved edits: a screen with changes asks first. A dialog
        on top is not asked (it has nothing to lose), and neither is the screen under it."""
        screen = self.screen
        if isinstance(screen, OrpoScreen):
            screen.leave(then=self.exit)
        else:
            self.exit()

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_show_help_panel(self) -> None:
        """F1 (and the palette's "Keys"): the key help, headed by the folders in use."""
        # Imported here: the panel brings Textual's Markdown widget, which start-up need not load.
        from tui.widgets.help_panel import FoldersHelpPanel

        if not self.screen.query("HelpPanel"):
            self.screen.mount(FoldersHelpPanel(self.workspace.presets_dir, self.workspace.runs_dir))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, OrpoScreen):
            yield from screen.commands()
            # Not offered over a dialog: its caller waits for its answer (see action_go).
            for mode, title in (("presets", "Presets"), ("runs", "Runs"), ("queue", "Queue")):
                yield SystemCommand(f"Go to {title}", f"The {title.lower()} list", partial(self.action_go, mode))
            # Listed afresh each time the palette opens, so a run started a moment ago is there.
            for run_dir in list_runs(self.workspace.runs_dir):
                yield SystemCommand(f"Run {run_dir.name}", "Open this run's monitor", partial(self.open_monitor, run_dir))

    def _handle_exception(self, error: Exception) -> None:
        """An error nothing else handled: keep its traceback in a crash file and say where,
        then let Textual restore the terminal and exit non-zero (the CLI prints the line)."""
        if self.crash is None:
            path = write_crash_file(error, f"presets: {self.workspace.presets_dir}\nruns: {self.workspace.runs_dir}")
            self.crash = crash_line(error, path)
        super()._handle_exception(error)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Background work never fails silently: its error becomes a visible message."""
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            err = event.worker.error
            self.notify(f"{event.worker.name}: {type(err).__name__}: {err}", severity="error", timeout=10)


def make_app(presets_dir: Path, runs_dir: Path, notify: NotifySettings | None = None,
             settings_problems: Iterable[str] = ()) -> OrpoApp:
    return OrpoApp(Path(presets_dir), Path(runs_dir), notify, settings_problems)
