"""Runs from the app: a real `orpo-train` started, watched, stopped and resumed through Pilot."""

import threading
import time

from pilot_waits import wait_until
from textual.widgets import DataTable

from trainer.pure.runs import read_status
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import REFRESH_SECONDS, RunsScreen
from tui.widgets.chart_view import ChartView

PRESET = """description = "short demo for the app test"
[training]
iters = 400
steps_per_report = 2
steps_per_eval = 0
save_every = 100
"""


async def test_start_watch_stop_resume_finish(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "short.toml").write_text(PRESET)
    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"short", "tab", "s")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 60, "the monitor")
        monitor = app.screen
        run_dir = monitor.run_dir
        await wait_until(pilot, lambda: len(monitor.series.train("loss")[0]) >= 3, 120, "loss points")
        chart = monitor.query_one("#chart-loss", ChartView)
        # The monitor redraws at most every CHART_MIN_INTERVAL seconds, and a redraw may
        # come before the first train event (the run's status event alone): wait for the
        # redraw that has the data, not for any second one.
        # (Up to CHART_MIN_INTERVAL after the last redraw, plus a poll: given a minute on a loaded machine.)
        await wait_until(pilot, lambda: "waiting for data" not in chart.render().plain, 60, "a chart redraw with data")
        assert "loss" in chart.render().plain

        await pilot.press("x")
        await wait_until(pilot, lambda: (read_status(run_dir) or {}).get("state") == "stopped", 60, "stopped")
        assert (run_dir / "adapters" / "adapters.safetensors").is_file()
        stopped_at = read_status(run_dir)["step"]

        # Extend from the runs list to a near finish line, as a user would after a stop.
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await wait_until(pilot, lambda: app.screen.query_one(DataTable).row_count == 1, 10, "the runs row")
        app.resume_run(run_dir, [f"training.iters={stopped_at + 4}"])
        await wait_until(pilot, lambda: (read_status(run_dir) or {}).get("state") == "completed", 120, "completed")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: "completed" in str(table.get_row_at(0)[1]), 3 * REFRESH_SECONDS,
                         "the runs list to show the run completed on its own refresh")


def test_runs_index_lists_damaged_runs_with_their_reason(tmp_path):
    from trainer.pure.run_folder import RunFolder
    from tui.runs_index import RunsIndex

    for name, status, metrics_is_dir in (("a", b'{"state": "stopped", "total_steps": "x"}', False),
                                         ("b", b"", False), ("c", b'{"state": "stopped"}', True)):
        run = RunFolder(tmp_path / name)
        run.root.mkdir()
        run.status.write_bytes(status)
        if metrics_is_dir:
            run.metrics.mkdir()
    by_name = {s.name: s for s in RunsIndex(tmp_path).refresh()}
    assert by_name["a"].state == "stopped" and by_name["a"].error == 'status.json: total_steps = "x" is not valid'
    assert by_name["b"].state == "unknown" and by_name["b"].error == "status.json is empty"
    assert by_name["c"].state == "stopped" and by_name["c"].error.startswith("metrics.jsonl: cannot be read")


METAL = ("libc++abi: terminating due to uncaught exception of type std::runtime_error: "
         "[metal::malloc] Resource limit exceeded")


def _crashed_run(runs_dir, log_lines):
    import json

    from trainer.pure.train_log import stamped, start_line

    run = runs_dir / "20240101-120000-demo"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("")
    # "running" with no pid: a trainer gone without recording its end.
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": None, "step": 4, "total_steps": 10,
                                                 "started_at": 1704110400.0}))
    (run / "train.log").write_text("\n".join([stamped(start_line(99)), *log_lines]) + "\n")
    return run


def test_runs_index_reads_a_crashed_runs_log_again_only_when_it_changes(tmp_path):
    from tui.runs_index import RunsIndex

    run = _crashed_run(tmp_path, ["Fatal Python error: Aborted"])
    index = RunsIndex(tmp_path)
    assert [s.error for s in index.refresh()] == ["Fatal Python error: Aborted"]
    for _ in range(5):
        index.refresh()
    assert index._causes[run].reads == 1
    with (run / "train.log").open("a") as fh:
        fh.write(METAL + "\n")
    assert [(s.state, s.error) for s in index.refresh()] == [("crashed", METAL)]
    assert index._causes[run].reads == 2


async def test_a_crashed_run_shows_why_in_the_list_and_the_monitor(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    _crashed_run(tmp_path / "runs", [METAL, "Fatal Python error: Aborted", "", "Current thread 0x1 (most recent call first):"])
    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), 10, "the runs list")
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 1, 10, "the crashed run")
        row = [str(c) for c in table.get_row_at(0)]
        note = row[-1]  # the note column, fitted to the screen: the cause, or its start and "…"
        assert row[1] == "crashed" and (note == METAL or (note.endswith("…") and METAL.startswith(note[:-1]) and len(note) > 20))
        detail = str(screen.query_one("#detail").render())
        assert f"crashed: {METAL}" in detail and "press u to resume" in detail
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        monitor = app.screen
        await wait_until(pilot, lambda: "crashed: " in str(monitor.query_one("#alarms").render()), 10, "the cause")
        assert f"✖ crashed: {METAL}" in str(monitor.query_one("#alarms").render())
        assert str(monitor.query_one("#state").render()).startswith("crashed")


def _two_runs(runs):
    from test_compare import T0, _config, _write_run

    a = _write_run(runs, "20240101-120000-base", _config(0.1, 8), [1.5, 1.2, 1.3], started_at=T0, ended_at=T0 + 40)
    b = _write_run(runs, "20240101-130000-base-2", _config(0.2, 16), [1.4, 1.3, 1.1], started_at=T0 + 60,
                   ended_at=T0 + 100)
    return a, b


def test_runs_index_lists_at_once_and_leaves_long_metrics_to_load(tmp_path, monkeypatch):
    # The first refresh of a folder of long runs parsed every metrics file, then summarized
    # each (reading it again), before the runs list or a started run's monitor could show:
    # seconds. Past a byte budget the metrics are now left to `load`, run in a thread.
    from tui import runs_index
    from tui.runs_index import RunsIndex

    a, b = _two_runs(tmp_path)
    # Room for one run: its metrics read once into the list's numbers, once into the summary's.
    monkeypatch.setattr(runs_index, "INLINE_BYTES", 2 * (b / "metrics.jsonl").stat().st_size)
    index = RunsIndex(tmp_path)
    by_name = {s.name: s for s in index.refresh()}
    first, second = by_name[b.name], by_name[a.name]  # newest first: b takes the budget
    assert not first.loading and first.val_loss == 1.1 and first.perf["mean_pairs_per_second"] == 20.0
    assert second.loading and second.loss is None and second.val_loss is None and second.perf is None
    assert second.state == "completed" and second.step == 30  # status.json is read at once all the same
    assert index.pending

    assert index.load()
    by_name = {s.name: s for s in index.refresh()}
    assert not by_name[a.name].loading and by_name[a.name].val_loss == 1.3
    assert by_name[a.name].perf["max_peak_memory_gb"] == 3.0
    assert not index.pending and not index.load()


async def test_the_list_marks_numbers_still_being_read_then_shows_them(tmp_path, monkeypatch):
    from tui import runs_index

    runs = tmp_path / "runs"
    a, b = _two_runs(runs)
    monkeypatch.setattr(runs_index, "INLINE_BYTES", 0)
    release = threading.Event()
    load = runs_index.RunsIndex.load
    monkeypatch.setattr(runs_index.RunsIndex, "load", lambda self, **kw: release.wait(10) and load(self, **kw))
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        row = [str(c) for c in table.get_row(str(a))]
        assert row[:3] == [a.name, "completed", "30/0"] and row[4:6] == ["…", "…"]  # val loss, val acc
        release.set()
        await wait_until(pilot, lambda: str(table.get_cell(str(a), "val_loss")) == "1.3000", 10, "the numbers")
        assert str(table.get_cell(str(a), "pairs_s")) == "20"


async def test_a_started_runs_monitor_does_not_wait_for_the_runs_list(tmp_path, monkeypatch):
    # Starting a run opens its monitor above the runs list, which the app builds then: it
    # read every run's metrics before the monitor could show. It reads them once it shows.
    from tui.runs_index import RunsIndex

    runs = tmp_path / "runs"
    a, b = _two_runs(runs)
    refreshes = []
    refresh = RunsIndex.refresh
    monkeypatch.setattr(RunsIndex, "refresh", lambda self: refreshes.append(1) or refresh(self))
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_monitor(a)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        await pilot.pause(0.3)
        assert refreshes == []
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and refreshes
        assert app.screen.selected.path == a and app.screen.query_one(DataTable).row_count == 2


async def test_quitting_stops_the_lists_background_read_at_the_next_file(tmp_path, monkeypatch):
    # Quitting while the list read a folder of long runs waited for every one of them (the
    # read thread is joined at exit): seconds on a blank terminal.
    from tui import runs_index

    runs = tmp_path / "runs"
    _two_runs(runs)
    monkeypatch.setattr(runs_index, "INLINE_BYTES", 0)
    reads = []
    read = runs_index._Latest.read

    finished = []

    def slow_read(run):
        # The read under way lasts until the app has begun to quit (at most 10 s), however
        # long quitting takes on a busy machine; then no other read may start.
        reads.append(run)
        screen = next(s for s in app.screen_stack if isinstance(s, RunsScreen))
        deadline = time.monotonic() + 10
        while screen.shown.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            return read(run)
        finally:
            finished.append(time.monotonic())

    monkeypatch.setattr(runs_index._Latest, "read", staticmethod(slow_read))
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await wait_until(pilot, lambda: reads, 10, "the background read")
        quitting = time.monotonic()
    deadline = time.monotonic() + 15
    while not finished and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # long enough for another read to begin, were one to
    assert len(reads) == 1
    assert finished[0] - quitting < 9  # the read ended when the app quit, not at its deadline


def test_a_crashed_runs_duration_stops_at_its_last_sign_of_life(tmp_path):
    # A crashed run has no ended_at: its duration ran on with the wall clock (a run dead
    # for a year showed 8760h). It ends at the newest write to its status, metrics or log.
    import os

    from tui.runs_index import RunsIndex

    run = _crashed_run(tmp_path, ["Fatal Python error: Aborted"])
    started = 1704110400.0
    for name in ("status.json", "train.log", "config.toml"):
        os.utime(run / name, (started + 30, started + 30))
    (s,) = RunsIndex(tmp_path).refresh()
    assert s.state == "crashed" and s.duration == 30.0
