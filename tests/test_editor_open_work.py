"""What opening the preset editor must not pay for once the app has warmed up: each was
tens of milliseconds of its first paint at 160x48 (tests/bench/screen_open.py times it)."""

import gc
import shutil
from pathlib import Path

from pilot_waits import wait_for_form, wait_until
from textual.app import App
from textual.css.stylesheet import Stylesheet

from tui.app import make_app
from tui.screens.preset_editor import PresetEditorScreen

REPO = Path(__file__).resolve().parents[1]


async def test_editor_opens_without_stylesheet_parse_or_part_restyles(tmp_path, monkeypatch):
    """Textual parsed the whole stylesheet again for each widget class mounted for the first
    time (six times), restyled each footer key as it took the footer's compact class and
    each select's value part twice; a full garbage-collector pass over every object of the
    process fell in the open too."""
    presets = tmp_path / "presets"
    presets.mkdir()
    shutil.copy(REPO / "presets" / "demo.toml", presets / "demo.toml")
    parses, restyled = [], []
    parse, update_styles = Stylesheet.parse, App.update_styles

    def counting_parse(self):
        parses.append(len(self.source))
        parse(self)

    def counting_restyles(self, node, animate=True):
        restyled.append(type(node).__name__)
        update_styles(self, node, animate)

    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo")
        # The warm-up begins half a second after the first screen and ends with the freeze;
        # its imports take seconds on a loaded machine.
        await wait_until(pilot, gc.get_freeze_count, 60, "the warm-up")
        assert gc.get_freeze_count() > 10_000
        await pilot.pause(0.2)
        monkeypatch.setattr(Stylesheet, "parse", counting_parse)
        monkeypatch.setattr(App, "update_styles", counting_restyles)
        await pilot.press("enter")
        assert isinstance(await wait_for_form(pilot), PresetEditorScreen)
        assert len(app.screen.query("FieldRow")) > 40  # the whole form, selects and switches included
        assert parses == []
        assert not {"FooterKey", "SelectCurrent"} & set(restyled), restyled
    assert gc.get_freeze_count() == 0  # the app's objects are collectable again once it ends
