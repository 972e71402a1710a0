"""Snapshot tests: the preset list and the preset editor at 80x24 and 160x48.

The app is built through the same `make_app` factory the CLI uses, on the committed fixture
presets in tests/fixtures/presets/. The screens show preset paths (the detail line, the train
command, a broken file's error), so each test copies the fixtures into its own temporary
folder, changes into it and passes the *relative* path `presets`: every machine and every
clone, wherever it lives, then renders exactly the same characters.

Update the SVGs after an intended change with:
    pytest tests/test_snapshots.py --snapshot-update
and look at them before committing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from tui.app import make_app

FIXTURE_PRESETS = Path(__file__).parent / "fixtures" / "presets"

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture
def app_in_fixture_dir(tmp_path, monkeypatch):
    """A fresh app on a copy of the fixture presets, reached by a relative path."""
    shutil.copytree(FIXTURE_PRESETS, tmp_path / "presets")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)  # read by App(); it would turn colours off

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
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.5)

    assert snap_compare(app_in_fixture_dir(), terminal_size=SIZES[size], run_before=run_before)
