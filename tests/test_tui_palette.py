"""The command palette reaches every list screen and every run by name."""

import shutil
from pathlib import Path

from pilot_waits import wait_until
from textual.command import CommandList, CommandPalette
from textual.worker import WorkerState

from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.queue import QueueScreen

FIXTURES = Path(__file__).parent / "fixtures"


def _app(tmp_path):
    shutil.copytree(FIXTURES / "presets", tmp_path / "presets")
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    return make_app(tmp_path / "presets", tmp_path / "runs")


async def _palette(pilot, query: str, first_hit: str, opens: type) -> None:
    """Type `query` into the palette; once its search has ended with `first_hit` on top,
    choose it and wait for the screen it `opens`."""
    await pilot.press("ctrl+p")
    await pilot.pause()
    palette = pilot.app.screen
    assert isinstance(palette, CommandPalette)
    await pilot.press(*query)
    await pilot.pause()  # the last key's Input.Changed, bubbled up, has started its search

    def top_hit() -> str | None:
        # The palette searches its providers in a worker and lists hits in batches: read
        # the list once no search is under way (a fixed pause was too short under load).
        if any(w.node is palette and w.group == CommandPalette._GATHER_COMMANDS_GROUP
               and w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in pilot.app.workers):
            return None
        option = palette.query_one(CommandList).highlighted_option
        return None if option is None else str(option.hit.text)

    await wait_until(pilot, lambda: top_hit() is not None, 30, f"the palette's hits for {query!r}")
    assert top_hit() == first_hit
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, opens), 30, f"{opens.__name__} from the palette")


async def test_palette_opens_a_runs_monitor_by_part_of_its_name(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _palette(pilot, "130000-demo", "Run 20240101-130000-demo-2", MonitorScreen)
        assert isinstance(app.screen, MonitorScreen)
        assert app.screen.run_dir.name == "20240101-130000-demo-2"
        assert app.current_mode == "runs"  # Esc then leads to the runs list


async def test_palette_goes_to_a_screen(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _palette(pilot, "go to queue", "Go to Queue", QueueScreen)
        assert isinstance(app.screen, QueueScreen)
