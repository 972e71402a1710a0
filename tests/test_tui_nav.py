"""Navigation is a fixed tree: Esc goes to the parent view, F2/F3/F4 go where the footer
says from every screen, and the keys the footer shows act where it shows them."""

import shutil
from pathlib import Path

from pilot_waits import footer_settled, wait_until
from test_compare import T0, _config, _write_run
from test_tui_compare import fixture_runs, open_compare
from test_tui_fit import screen_lines
from textual.widgets import DataTable, Input
from textual.widgets.data_table import ColumnKey

from trainer.pure.runs import atomic_write_json
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.preset_editor import PresetEditorScreen
from tui.screens.preset_list import PresetListScreen
from tui.screens.runs import RunsScreen
from tui.widgets.ask_name import AskName
from tui.widgets.leave_prompt import LeavePrompt

REPO = Path(__file__).resolve().parents[1]


def with_demo_preset(tmp_path: Path):
    runs, a, b = fixture_runs(tmp_path)
    shutil.copy(REPO / "presets" / "demo.toml", tmp_path / "presets" / "demo.toml")
    return runs, a, b


def footer_keys(app) -> set[str]:
    return {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show and b.enabled}


async def test_a_started_runs_monitor_goes_back_to_the_runs_list_not_through_stale_views(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_compare(pilot)
        await pilot.press("f2")  # the comparison stays behind in the runs mode
        await pilot.pause()
        assert isinstance(app.screen, PresetListScreen)
        app.open_monitor(a)  # what a start from the editor or the list does
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen) and app.screen.run_dir == a
        assert [type(s) for s in app.screen_stack] == [RunsScreen, MonitorScreen]
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and len(app.screen_stack) == 1
        assert app.screen.selected.path == a


async def test_f3_from_another_mode_shows_the_runs_list_not_an_old_view(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_compare(pilot)
        await pilot.press("f2")
        await pilot.pause()
        await pilot.press("f3")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and len(app.screen_stack) == 1


async def test_f2_in_the_editor_goes_to_the_preset_list_asking_about_unsaved_changes(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PresetEditorScreen)
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, PresetListScreen)

        await pilot.press("enter")
        await pilot.pause()
        editor = app.screen
        assert isinstance(editor, PresetEditorScreen)
        editor.set_field("description", "changed")  # an unsaved edit
        await pilot.pause()
        assert editor.dirty
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, LeavePrompt)
        await pilot.press("escape")  # keep editing
        await pilot.pause()
        assert app.screen is editor


async def test_after_f2_letter_keys_act_on_the_preset_list_not_the_filter(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.focused, Input)  # typing filters at first, fzf-style
        assert "n" not in footer_keys(app)  # so the footer does not offer what typing takes
        await pilot.press("f3", "f2")
        await pilot.pause()
        assert "n" in footer_keys(app)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, AskName)
        assert app.screen_stack[0].query_one("#filter", Input).value == ""


async def test_a_run_started_from_the_list_is_selected_there(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3", "down")  # the older run, as before "run again"
        await pilot.pause()
        assert app.screen.selected.path == a
        c = _write_run(runs, "20240101-140000-base-3", _config(0.1, 8), [1.5], started_at=T0 + 500, ended_at=None)
        app.open_monitor(c)
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and app.screen.selected.path == c
        table = app.screen.query_one(DataTable)
        assert table.cursor_row == table.get_row_index(str(c))


def cell(table: DataTable, row: Path, key: str) -> str:
    return str(table.get_cell(str(row), key))


def width(table: DataTable, key: str) -> int:
    """The width the column is drawn at."""
    return table.columns[ColumnKey(key)].get_render_width(table) - 2 * table.cell_padding


async def test_later_longer_values_widen_their_column_and_long_notes_end_in_an_ellipsis(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    atomic_write_json(a / "status.json", {"state": "stopped", "pid": None, "step": 4, "total_steps": 9,
                                          "started_at": T0, "ended_at": T0 + 40})
    (a / "notes.md").write_text("word " * 40)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        screen = app.screen
        table = screen.query_one(DataTable)
        # The note takes the room the other columns leave, and says where it is cut.
        shown = next(line for line in screen_lines(app) if a.name in line).rstrip()
        start = shown[shown.index("word"):-1]
        assert shown.endswith("…") and cell(table, a, "note").startswith(start) and len(cell(table, a, "note")) > len(start)
        atomic_write_json(a / "status.json", {"state": "stopped", "pid": None, "step": 74, "total_steps": 400,
                                              "started_at": T0, "ended_at": T0 + 40})
        screen.refresh_runs()
        await pilot.pause()
        assert cell(table, a, "step") == "74/400" and width(table, "step") >= len("74/400")
        await pilot.press("space")  # marks the highlighted run: "1● " comes before its name
        await pilot.pause()
        assert width(table, "run") >= len("1● " + b.name)


async def test_config_keys_that_differ_become_sortable_columns_and_wide_screens_show_speed(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        screen = app.screen
        table = screen.query_one(DataTable)
        labels = {str(c.key.value): str(c.label) for c in table.columns.values()}
        assert labels["cfg:orpo.beta"] == "beta" and labels["cfg:finetune.rank"] == "rank"
        assert "pairs_s" not in labels and "duration" in labels  # 80 columns: the less important go
        assert cell(table, a, "cfg:orpo.beta") == "0.1" and cell(table, b, "cfg:finetune.rank") == "16"
        screen.sort_key, screen.sort_reverse = "cfg:orpo.beta", True
        screen.refresh_runs()
        assert [s.path for s in screen.summaries] == [b, a]
        screen.sort_reverse = False
        screen.refresh_runs()
        assert [s.path for s in screen.summaries] == [a, b]

    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert cell(table, a, "pairs_s") == "20" and cell(table, a, "peak_gb") == "3"
        assert cell(table, a, "duration") == "0m40s"


async def test_every_footer_fits_80_columns_with_quit_and_the_f_keys(tmp_path):
    """The keys users need most are never scrolled out of an 80-column footer."""
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    seen = []
    async with app.run_test(size=(80, 24)) as pilot:

        async def check(*keys):
            # The footer rebuilds a refresh after a focus change or a new screen: read it once it has.
            await wait_until(pilot, lambda: footer_settled(app.screen), 30, "the footer's keys")
            await pilot.pause()
            footer = app.screen.query_one("Footer")
            shown = {k.key: k.region for k in footer.query("FooterKey")}
            palette = shown.pop("ctrl+p")
            assert all(region.right <= palette.x for region in shown.values()), (type(app.screen).__name__, shown)
            assert {"ctrl+q", "f2", "f3", "f4", *keys} <= set(shown), (type(app.screen).__name__, set(shown))
            seen.append(type(app.screen).__name__)

        await check()
        await pilot.press("tab")
        await check("s", "n", "w")
        await pilot.press("enter")
        await check("ctrl+s", "ctrl+r", "escape")
        await pilot.press("f3")
        await check("x", "u", "c")
        await pilot.press("enter")
        await check("escape", "x", "u")
        await pilot.press("escape", "space", "down", "space", "c")
        await check("escape", "x")
        await pilot.press("f4")
        await check("p", "x", "g")
    assert seen == ["PresetListScreen", "PresetListScreen", "PresetEditorScreen", "RunsScreen", "MonitorScreen",
                    "CompareScreen", "QueueScreen"]


async def test_f2_from_the_runs_goes_to_the_preset_list_even_with_an_editor_left_open(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")  # the editor; ctrl+r would start a run and leave it behind
        await pilot.pause()
        app.open_monitor(a)
        await pilot.pause()
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, PresetListScreen) and len(app.screen_stack) == 1


async def test_dialogs_fit_80x24_with_their_buttons_in_view(tmp_path):
    runs, a, b = with_demo_preset(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:

        async def buttons_in_view(name):
            await pilot.pause()
            box = app.screen.query_one(".dialog").content_region  # inside its border and padding
            buttons = list(app.screen.query("Button"))
            assert buttons, name
            for button in buttons:
                r = button.region
                assert r.height >= 3 and r.y >= box.y and r.bottom <= box.bottom and r.bottom <= 24, (name, r, box)
            await pilot.press("escape")
            await pilot.pause()

        await pilot.press("tab", "w")
        await buttons_in_view("sweep")
        await pilot.press("d")
        await buttons_in_view("delete preset")
        await pilot.press("n")
        await buttons_in_view("new preset")
