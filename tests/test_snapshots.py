"""Snapshot tests of every screen and dialog at 80x24 and 160x48: the preset list and editor,
the runs list, a run's monitor, the four compare tabs, the playground, the queue, the dialogs
and the F1 panel.

The app is built through the same `make_app` factory the CLI uses, on the committed fixture
presets in tests/fixtures/presets/ and run folders in tests/fixtures/runs/. The screens show
paths (the detail line, the train command, a broken file's error, the runs folder in a title),
so each test copies the fixtures into its own temporary folder, changes into it and passes the
*relative* paths `presets` and `runs`: every machine and every clone, wherever it lives, then
renders exactly the same characters.

Update the SVGs after an intended change with:
    pytest tests/test_snapshots.py --snapshot-update
and look at them before committing.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from pilot_waits import footer_settled, form_complete, wait_for_form, wait_until
from textual.widgets import DataTable, Input

from trainer.pure.system_memory import DEVICE_MEMORY_ENV
from tui.app import make_app

FIXTURE_PRESETS = Path(__file__).parent / "fixtures" / "presets"

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture
def app_in_fixture_dir(tmp_path, monkeypatch):
    """A fresh app on a copy of the fixture presets, reached by a relative path."""
    shutil.copytree(FIXTURE_PRESETS, tmp_path / "presets")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)  # read by App(); it would turn colours off
    # The editor's memory verdict compares with this machine's memory: pin it.
    monkeypatch.setenv(DEVICE_MEMORY_ENV, "16")

    def build():
        return make_app(Path("presets"), Path("runs"))

    return build


async def _highlight(pilot, name: str) -> None:
    """Put the list cursor on the preset called `name`, leaving focus where the app put it
    (which widget has focus on start is part of what the snapshot records)."""
    await pilot.pause()
    screen = pilot.app.screen
    for field in screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would be photographed on or off at random
    table = screen.query_one(DataTable)
    entry = next(e for e in screen.entries if e.name == name)
    table.move_cursor(row=table.get_row_index(str(entry.path)))
    await pilot.pause()
    assert screen.highlighted is not None and screen.highlighted.name == name


@pytest.mark.parametrize("size", SIZES)
def test_preset_list(snap_compare, app_in_fixture_dir, size):
    """The list with a valid preset highlighted: its path and train command below the table."""

    async def run_before(pilot):
        await _highlight(pilot, "demo")

    assert snap_compare(app_in_fixture_dir(), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_preset_list_broken(snap_compare, app_in_fixture_dir, size):
    """A preset with a TOML syntax error stays in the list, marked, with its error below."""

    async def run_before(pilot):
        await _highlight(pilot, "broken")

    assert snap_compare(app_in_fixture_dir(), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_preset_editor(snap_compare, app_in_fixture_dir, size):
    """The form for the demo preset (narrow stacked layout at 80 columns, side panel at 160)."""

    async def run_before(pilot):
        await _highlight(pilot, "demo")
        pilot.app.screen.query_one(DataTable).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert type(pilot.app.screen).__name__ == "PresetEditorScreen"
        # The focused input's cursor blinks: photographed on or off depending on the machine's
        # speed. Hold it still, then let the form's layout settle.
        # The form mounts the rows in view first and the rest a few per refresh: all of it
        # counts (the scrollbar's length), however long a loaded machine takes.
        await wait_for_form(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.5)

    assert snap_compare(app_in_fixture_dir(), terminal_size=SIZES[size], run_before=run_before)


# ---------------------------------------------------------------------------- runs and dialogs
#
# The committed run folders in tests/fixtures/runs/ (one completed, one failed, one stopped,
# and a queue) all have an ended_at, so every duration is fixed and no live clock is drawn.
# Their start times are shown as local clock times: the tests pin the time zone to UTC.

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"
COMPLETED, FAILED, STOPPED = "20240101-120000-demo", "20240101-130000-demo-2", "20240101-140000-demo-3"


@pytest.fixture
def app_with_runs(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE_PRESETS, tmp_path / "presets")
    shutil.copytree(FIXTURE_RUNS, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv(DEVICE_MEMORY_ENV, "16")  # the editor's memory verdict, as above
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield lambda: make_app(Path("presets"), Path("runs"))
    monkeypatch.undo()
    time.tzset()


async def _settle(pilot) -> None:
    screen = pilot.app.screen
    if type(screen).__name__ == "PresetEditorScreen":
        await wait_until(pilot, lambda: form_complete(screen), 60, "the whole form")
    await wait_until(pilot, lambda: footer_settled(screen), 30, "the footer's keys")
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.3)


async def _runs_list(pilot, name: str | None = None) -> None:
    """F3, then the cursor on the run called `name`."""
    await pilot.press("f3")
    await pilot.pause()
    screen = pilot.app.screen
    assert type(screen).__name__ == "RunsScreen"
    table = screen.query_one("#runs", DataTable)
    if name is not None:
        table.move_cursor(row=next(i for i in range(table.row_count) if str(table.get_row_at(i)[0]).endswith(name)))
    await _settle(pilot)


async def _compare(pilot, tab: str) -> None:
    """The completed run marked first (it is "A"), then the failed one, then `c`."""
    await _runs_list(pilot, COMPLETED)
    await pilot.press("space")
    await _runs_list(pilot, FAILED)
    await pilot.press("space", "c")
    await pilot.pause()
    assert type(pilot.app.screen).__name__ == "CompareScreen"
    await pilot.press(tab)
    await _settle(pilot)


async def _preset_key(pilot, key: str, expect: str) -> None:
    await _highlight(pilot, "demo")
    pilot.app.screen.query_one(DataTable).focus()
    # The table's keys (s, w, n) join the footer a refresh after the focus; the dialog must
    # open over the footer as a user would see it, not over the one before (a race under load).
    await wait_until(pilot, lambda: footer_settled(pilot.app.screen), 30, "the footer's keys")
    await pilot.press(key)
    await pilot.pause()
    assert type(pilot.app.screen).__name__ == expect
    await _settle(pilot)


async def _open_monitor(pilot):
    await _runs_list(pilot, COMPLETED)
    await pilot.press("enter")
    await pilot.pause()
    assert type(pilot.app.screen).__name__ == "MonitorScreen"
    await _settle(pilot)


async def _leave_prompt(pilot):
    await _preset_key(pilot, "enter", "PresetEditorScreen")
    await pilot.press("1", "escape")  # the focused field gets one more character: unsaved
    await pilot.pause()
    assert type(pilot.app.screen).__name__ == "LeavePrompt"
    await _settle(pilot)


async def _help(pilot):
    await _runs_list(pilot, COMPLETED)
    await pilot.press("f1")
    await _settle(pilot)
    assert pilot.app.screen.query("HelpPanel")




SCREENS = {
    "runs": lambda pilot: _runs_list(pilot, COMPLETED),
    "monitor": _open_monitor,
    "compare_diff": lambda pilot: _compare(pilot, "1"),
    "compare_overlay": lambda pilot: _compare(pilot, "2"),
    "compare_samples": lambda pilot: _compare(pilot, "3"),
    "compare_summary": lambda pilot: _compare(pilot, "4"),
    "queue": lambda pilot: _queue(pilot),
    "delete_confirm": lambda pilot: _run_key(pilot, "d", "Confirm"),
    "tags_prompt": lambda pilot: _run_key(pilot, "t", "AskName"),
    "leave_prompt": _leave_prompt,
    "show_command": lambda pilot: _preset_key(pilot, "x", "ShowCommand"),
    "sweep": lambda pilot: _preset_key(pilot, "w", "SweepDialog"),
    "help": _help,
    "playground": lambda pilot: _playground(pilot),
}


async def _playground(pilot):
    """The playground over the completed and the failed run, in a finished state given to it
    (no servers: what streamed answers look like once done, and a column whose server failed)."""
    from tui.screens.playground import DONE, ERROR, Column, PlaygroundScreen

    await _runs_list(pilot, COMPLETED)
    runs = Path("runs")
    columns = [Column("base", runs / COMPLETED, "base", state=DONE, text="voc voc voc noi noi noi noi"),
               Column("A", runs / COMPLETED, "final", state=DONE,
                      text="Happy to help! Grass is green. I hope that helps."),
               Column("B", runs / FAILED, "final", state=ERROR, error="runs/20240101-130000-demo-2: no adapters")]
    screen = PlaygroundScreen(pilot.app.workspace, [runs / COMPLETED, runs / FAILED], columns=columns,
                              start_servers=False)
    screen.prompt = "What colour is grass?"
    await pilot.app.push_screen(screen)
    screen.query_one("#prompt").cursor_blink = False
    await _settle(pilot)


async def _queue(pilot):
    await pilot.press("f4")
    await pilot.pause()
    assert type(pilot.app.screen).__name__ == "QueueScreen"
    await _settle(pilot)


async def _run_key(pilot, key: str, expect: str):
    await _runs_list(pilot, STOPPED)
    await pilot.press(key)
    await pilot.pause()
    assert type(pilot.app.screen).__name__ == expect
    await _settle(pilot)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(snap_compare, app_with_runs, screen, size):
    assert snap_compare(app_with_runs(), terminal_size=SIZES[size], run_before=SCREENS[screen])
