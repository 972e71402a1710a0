"""A distributed run from the app, through Pilot, with real `orpo-train` ranks: started from a
preset with `[distributed] np = 2`, its world size and both ranks on the monitor and in the
runs list, rank 1's log in the log pane, stopped with x (both rank processes end, the run is
`stopped`), resumed on one rank (U), and resumed again on the preset's two (u)."""

import re

import psutil
import pytest
from pilot_waits import wait_until
from textual.widgets import DataTable, Static

from trainer.backend_choice import choose
from trainer.pure.rank_status import RANK_PIDS, WORLD_SIZE
from trainer.pure.runs import pid_alive, read_status
from trainer.pure.trainer_process import RANK_OF_FLAG
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen
from tui.widgets.ask_name import AskName

PRESET = """description = "two ranks for the app test"
[training]
iters = 400
steps_per_report = 2
steps_per_eval = 0
save_every = 100
[distributed]
np = 2
backend = "{backend}"
"""

BACKENDS_HERE = ["ring", pytest.param("mpi", marks=pytest.mark.skipif(not choose("mpi", 2).env,
                                                                     reason="no MPI library and mpirun here"))]
BOTH_ALIVE = re.compile(r"2 ranks · rank 0 step (\d+) \(pid (\d+) alive\) · rank 1 step (\d+) \(pid (\d+) alive\)")


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def state(run_dir) -> str | None:
    return (read_status(run_dir) or {}).get("state")


async def both_ranks_training(pilot, monitor, after: int) -> list[int]:
    """Wait until the monitor shows both ranks alive past step `after`; their pids."""
    def shown():
        m = BOTH_ALIVE.fullmatch(text_of(monitor, "#ranks"))
        return m if m and int(m[1]) > after and int(m[3]) > after else None

    await wait_until(pilot, shown, 240, "both ranks training on the monitor")
    m = shown()
    pids = [int(m[2]), int(m[4])]
    assert pids == read_status(monitor.run_dir)[RANK_PIDS]
    for pid in pids:  # the rank processes themselves, not the launcher
        assert RANK_OF_FLAG in psutil.Process(pid).cmdline()
    return pids


@pytest.mark.parametrize("backend", BACKENDS_HERE)
async def test_two_rank_run_from_the_app_stop_reaches_both_and_it_resumes_on_one_then_two(tmp_path, backend):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "two.toml").write_text(PRESET.format(backend=backend))
    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"two", "tab", "s")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 60, "the monitor")
        monitor = app.screen
        run_dir = monitor.run_dir
        pids = await both_ranks_training(pilot, monitor, after=0)
        assert read_status(run_dir)[WORLD_SIZE] == 2

        # The log pane switches to rank 1's own log, which reports its steps too.
        await pilot.press("g")
        await wait_until(pilot, lambda: "train.rank1.log (rank 1" in text_of(monitor, "#log"), 10, "rank 1's log")
        assert re.search(r"step \d+/400: loss", text_of(monitor, "#log"))

        # x: the stop reaches every rank; both processes end and the run is stopped.
        await pilot.press("x")
        await wait_until(pilot, lambda: state(run_dir) == "stopped", 90, "stopped")
        await wait_until(pilot, lambda: not any(map(pid_alive, pids)), 30, "both ranks gone")
        stopped_at = read_status(run_dir)["step"]
        assert (run_dir / "adapters" / "checkpoints" / f"step-{stopped_at:07d}").is_dir()
        gone = f"2 ranks · rank 0 step {stopped_at} (pid {pids[0]} gone) · rank 1 step {stopped_at} (pid {pids[1]} gone)"
        await wait_until(pilot, lambda: text_of(monitor, "#ranks") == gone, 10, "both ranks gone on the monitor")

        # The runs list says the same under the highlighted run.
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await wait_until(pilot, lambda: app.screen.query_one(DataTable).row_count == 1, 10, "the runs row")
        await wait_until(pilot, lambda: gone in text_of(app.screen, "#detail"), 10, "the ranks in the detail line")

        # U: resume on one rank (the checkpoint is global state).
        runs = app.screen
        await wait_until(pilot, lambda: runs.selected.busy_reason is None, 30, "the lock let go")
        rank1_log = (run_dir / "train.rank1.log").read_text()
        await pilot.press("U")
        await wait_until(pilot, lambda: isinstance(app.screen, AskName), 10, "the ranks dialog")
        await pilot.press("backspace", "1", "enter")
        await wait_until(pilot, lambda: (read_status(run_dir) or {}).get("step", 0) > stopped_at
                         and state(run_dir) == "running", 180, "training on one rank")
        assert read_status(run_dir)[WORLD_SIZE] == 1 and read_status(run_dir)[RANK_PIDS] is None
        assert (run_dir / "train.rank1.log").read_text() == rank1_log  # no rank 1 this time
        await pilot.press("x")
        await wait_until(pilot, lambda: state(run_dir) == "stopped", 90, "stopped again")
        await wait_until(pilot, lambda: "2 ranks" not in text_of(app.screen, "#detail"), 10, "no ranks line for one rank")
        second_stop = read_status(run_dir)["step"]
        await wait_until(pilot, lambda: runs.selected.busy_reason is None and runs.selected.state == "stopped", 30,
                         "the lock let go again")

        # u: resume as configured, on the preset's two ranks again.
        await pilot.press("u")
        # Running once the launcher and both ranks are up: as long as the one-rank resume above.
        await wait_until(pilot, lambda: state(run_dir) == "running", 180, "resumed")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        pids = await both_ranks_training(pilot, app.screen, after=second_stop)
        await pilot.press("x")
        await wait_until(pilot, lambda: state(run_dir) == "stopped", 90, "stopped a third time")
        await wait_until(pilot, lambda: not any(map(pid_alive, pids)), 30, "both ranks gone again")
