"""The command palette reaches every list screen and every run by name."""

import shutil
from pathlib import Path

from textual.command import CommandPalette

from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.queue import QueueScreen

FIXTURES = Path(__file__).parent / "fixtures"


def _app(tmp_path):
    shutil.copytree(FIXTURES / "presets", tmp_path / "presets")
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    return make_app(tmp_path / "presets", tmp_path / "runs")


async def _palette(pilot, query: str) -> None:
    await pilot.press("ctrl+p")
    await pilot.pause()
    assert isinstance(pilot.app.screen, CommandPalette)
    await pilot.press(*query)
    # The palette searches its providers in a worker: give it time to list the hits.
    await pilot.pause(0.5)
    await pilot.press("enter")
    await pilot.pause(0.3)


async def test_palette_opens_a_runs_monitor_by_part_of_its_name(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _palette(pilot, "130000-demo")
        assert isinstance(app.screen, MonitorScreen)
        assert app.screen.run_dir.name == "20240101-130000-demo-2"
        assert app.current_mode == "runs"  # Esc then leads to the runs list


async def test_palette_goes_to_a_screen(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _palette(pilot, "go to queue")
        assert isinstance(app.screen, QueueScreen)
