"""The app never adds a second writer to a run: a double key press starts one trainer, and
a run another process trains can be neither resumed nor deleted (two apps on one folder)."""

import subprocess
import sys

from pilot_waits import wait_until
from textual.widgets import DataTable
from trainer_helpers import DEMO, REPO, first_line, start_trainer, wait_for_step

from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import read_status, write_status
from tui.app import make_app
from tui.screens.runs import RunsScreen


def stopped_run(runs):
    proc = start_trainer(str(DEMO), "--runs-dir", str(runs), "--set", "training.iters=500",
                         "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0")
    run_dir = first_line(proc)
    wait_for_step(run_dir, 2, proc)
    proc.send_signal(2)
    assert proc.wait(timeout=60) == 130
    return run_dir


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def open_runs(pilot, app):
    await pilot.press("f3")
    await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count,
                     10, "the runs list")


async def test_double_u_starts_one_trainer(tmp_path):
    runs = tmp_path / "runs"
    run_dir = stopped_run(runs)
    app = make_app(REPO / "presets", runs)
    launcher = app.workspace.launcher
    spawned = []
    spawn = launcher._spawn
    launcher._spawn = lambda argv, *a, **k: spawned.append(argv) or spawn(argv, *a, **k)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot, app)
        await pilot.press("u", "u")
        await wait_until(pilot, lambda: (read_status(run_dir) or {}).get("state") == "running", 60, "the resume")
        await pilot.press("u")
        await pilot.pause(0.5)
        assert len(spawned) == 1 and len(launcher.children) == 1
        assert any("Not resumed" in n for n in notices(app)), notices(app)
        for proc in app.workspace.launcher.children.values():
            proc.kill()
            proc.wait()


async def test_double_s_on_a_preset_starts_one_run_and_the_app_lives(tmp_path):
    # Seen in tmux from a fresh clone: `s s` started two runs, and the first run's monitor,
    # replaced by the second before its first refresh, took the app down (NoMatches '#log').
    runs = tmp_path / "runs"
    app = make_app(REPO / "presets", runs)
    launcher = app.workspace.launcher
    spawned = []
    spawn = launcher._spawn
    launcher._spawn = lambda argv, *a, **k: spawned.append(argv) or spawn(argv, *a, **k)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        table.focus()
        await pilot.pause()
        await pilot.press("s", "s")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "MonitorScreen", 60, "the monitor")
        await pilot.pause(1.0)
        assert len(spawned) == 1 and len(launcher.children) == 1
        assert len([d for d in runs.iterdir() if d.is_dir() and not d.name.startswith(".")]) == 1
        assert any("already being started" in n for n in notices(app)), notices(app)
        assert app.is_running
        for proc in app.workspace.launcher.children.values():
            proc.kill()
            proc.wait()


async def test_a_run_held_by_another_process_is_neither_resumed_nor_deleted(tmp_path):
    runs = tmp_path / "runs"
    run_dir = RunFolder(runs / "20260101-000000-held")
    run_dir.root.mkdir(parents=True)
    write_status(run_dir.root, state="stopped", step=3, total_steps=10)
    run_dir.config.write_text("")
    # Another app's trainer, between its lock and its first status write.
    other = subprocess.Popen([sys.executable, "-c", "import time; from trainer.pure.run_lock import RunLock; "
                              f"RunLock({str(run_dir.root)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        app = make_app(REPO / "presets", runs)
        async with app.run_test(size=(160, 48)) as pilot:
            await open_runs(pilot, app)
            await pilot.press("u")
            await pilot.pause(0.3)
            await pilot.press("d")
            await pilot.pause(0.3)
            assert not app.workspace.launcher.children
            said = notices(app)
            assert f"Not resumed: {run_dir.name} is being trained by pid {other.pid}" in said, said
            assert any(f"is being trained by pid {other.pid}" in n and "delet" in n for n in said), said
            assert run_dir.root.is_dir()
    finally:
        other.kill()
        other.wait()


async def test_delete_confirmed_after_another_app_resumed_is_refused(tmp_path):
    # App B showed the run as stopped and asked for confirmation; meanwhile app A resumed it.
    runs = tmp_path / "runs"
    run_dir = stopped_run(runs)
    app = make_app(REPO / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot, app)
        await pilot.press("d")
        await pilot.pause(0.3)
        resumed = subprocess.Popen([sys.executable, "-m", "trainer", "--resume", str(run_dir)], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert resumed.stdout.readline().strip() == str(run_dir)  # it holds the lock now
            app.screen.dismiss("delete")  # the confirmation dialog on top
            await pilot.pause(0.5)
            assert run_dir.is_dir()
            assert any(n.startswith("Not deleted:") and "is being trained by pid" in n for n in notices(app)), notices(app)
        finally:
            resumed.kill()
            resumed.wait()
