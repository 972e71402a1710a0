"""The monitor's resource line and resource alarms, and the app telling of a run's end, in
the app under Pilot (the real terminal output is tested in a pty: test_tui_notify_pty.py)."""

import time

import pytest
from pilot_waits import wait_until

from trainer.pure.events import MetricsWriter
from trainer.pure.metrics import ACTIVE_MEMORY_GB, CACHE_MEMORY_GB, LOSS, PAIRS_PER_SECOND, PEAK_MEMORY_GB, RSS_GB
from trainer.pure.runs import write_status
from trainer.pure.user_settings import NotifySettings
from tui.app import make_app
from tui.screens.monitor import MonitorScreen


def run_with_reports(runs, name, state, pid=None, pairs_per_second=(10.0,) * 12):
    run = runs / name
    run.mkdir(parents=True)
    write_status(run, state=state, pid=pid, step=10 * len(pairs_per_second), total_steps=1000, started_at=time.time())
    with MetricsWriter(run / "metrics.jsonl") as w:
        for i, rate in enumerate(pairs_per_second):
            w.write("train", 10 * (i + 1), **{LOSS: 2.0 - 0.01 * i, PAIRS_PER_SECOND: rate, PEAK_MEMORY_GB: 0.0404,
                                             ACTIVE_MEMORY_GB: 0.021, CACHE_MEMORY_GB: 0.01, RSS_GB: 0.3})
    return run


def shown(screen, selector) -> str:
    found = screen.query(selector)  # empty until the screen has composed
    return str(found.first().render()) if found else ""


def resources_text(screen) -> str:
    return shown(screen, "#resources")


def alarms_text(screen) -> str:
    return shown(screen, "#alarms")


async def test_the_monitor_of_a_live_run_shows_cpu_rss_mlx_memory_available_and_swap(tmp_path, trainer_stand_in):
    runs = tmp_path / "runs"
    run = run_with_reports(runs, "20260101-000000-live", "running", trainer_stand_in.pid)
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_monitor(run)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        screen = app.screen
        # The first look has no CPU% yet ("…"); a second later it has one.
        await wait_until(pilot, lambda: "%" in resources_text(screen), 10, "CPU%")
        text = resources_text(screen)
        assert text.startswith("CPU 0% RSS ") and " MB · MLX active 21 MB peak 40.4 MB · available " in text
        assert " GB · swap " in text
        # The stand-in ends without a word: the line says so, with no stale CPU%.
        trainer_stand_in.kill()
        trainer_stand_in.wait()
        await wait_until(pilot, lambda: "not running" in resources_text(screen), 10, "the run's end")
        assert resources_text(screen) == "trainer not running (crashed) · last report: MLX active 21 MB peak 40.4 MB"


async def test_the_monitor_shows_the_swap_and_throughput_alarms_with_their_steps(tmp_path, trainer_stand_in):
    runs = tmp_path / "runs"
    rates = (10.0,) * 10 + (6.0,) * 4
    run = run_with_reports(runs, "20260101-000000-slow", "running", trainer_stand_in.pid, rates)
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        # What the app's watch sampled while the run trained: swap grew from step 120.
        app.workspace.watch.swap[run.name] = [(100, 0.0), (120, 300e6), (140, 900e6)]
        app.open_monitor(run)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        screen = app.screen
        await wait_until(pilot, lambda: "swap" in alarms_text(screen), 10, "the swap alarm")
        text = alarms_text(screen)
        assert "⚠ swap in use grew by 900 MB since step 120 (0 B → 900 MB)" in text
        assert "⚠ pairs_per_second 6 is 40% below the run's median 10 for 4 reports since step 110" in text


async def test_the_monitor_of_a_finished_run_says_its_trainer_is_not_running(tmp_path):
    runs = tmp_path / "runs"
    run = run_with_reports(runs, "20260101-000000-done", "completed")
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_monitor(run)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        screen = app.screen
        await wait_until(pilot, lambda: "not running" in resources_text(screen), 10, "the resource line")
        assert resources_text(screen) == "trainer not running (completed) · last report: MLX active 21 MB peak 40.4 MB"


@pytest.mark.parametrize("terminal", [True, False])
async def test_the_app_tells_of_a_watched_run_that_ends_in_a_toast_and_the_terminal_unless_off(
        tmp_path, trainer_stand_in, terminal, monkeypatch):
    monkeypatch.delenv("TMUX", raising=False)
    runs = tmp_path / "runs"
    run = run_with_reports(runs, "20260101-000000-live", "running", trainer_stand_in.pid)
    app = make_app(tmp_path, runs, NotifySettings() if terminal else NotifySettings(terminal=()))
    written: list[str] = []
    app.write_to_terminal = written.append  # headless: there is no terminal to write to
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.workspace.watch.active == [run], 10, "the watch to see the run")
        with MetricsWriter(run / "metrics.jsonl") as w:
            w.write("val", 120, loss=0.25)
        write_status(run, state="completed")
        await wait_until(pilot, lambda: app._notifications, 10, "the toast")
        [toast] = list(app._notifications)
        assert toast.title == "Run ended" and toast.message == f"{run.name} completed, val loss 0.2500"
        if terminal:
            assert written == [f"\x07\x1b]9;orpo-tui: {toast.message}\x07\x1b]777;notify;orpo-tui;{toast.message}\x07"]
        else:
            await pilot.pause(0.3)
            assert written == []
