"""The compare screen and the runs list's marks, tags and notes, on fixture run folders."""

from pathlib import Path

from test_compare import CHANGED_DERIVED, CHANGED_SETTINGS, T0, _config, _write_run
from textual.widgets import DataTable, Input, TabbedContent

from tui.app import make_app
from tui.run_notes import read_notes, read_tags
from tui.screens.compare import CompareScreen
from tui.screens.runs import RunsScreen
from tui.widgets.chart_view import ChartView


def fixture_runs(tmp_path: Path):
    runs = tmp_path / "runs"
    a = _write_run(runs, "20240101-120000-base", _config(0.1, 8), [1.5, 1.2, 1.3], started_at=T0, ended_at=T0 + 40)
    b = _write_run(runs, "20240101-130000-base-2", _config(0.2, 16), [1.4, 1.0, 1.1], started_at=T0, ended_at=T0 + 100)
    (tmp_path / "presets").mkdir()
    return runs, a, b


def column(table: DataTable, index: int) -> list[str]:
    return [str(table.get_row_at(i)[index]) for i in range(table.row_count)]


async def open_compare(pilot):
    await pilot.press("f3")
    await pilot.pause()
    assert isinstance(pilot.app.screen, RunsScreen)
    # Newest first: B is row 0. Mark A first so it is the diff's "A".
    await pilot.press("down", "space", "up", "space", "c")
    await pilot.pause()
    assert isinstance(pilot.app.screen, CompareScreen)
    return pilot.app.screen


async def test_diff_shows_exactly_the_changed_keys_and_toggles(tmp_path):
    runs, a, b = fixture_runs(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot)
        assert screen.runs == [a, b]
        table = screen.query_one("#diff-table", DataTable)
        assert column(table, 0) == CHANGED_SETTINGS + CHANGED_DERIVED
        assert column(table, 1)[:2] == ["0.1", "8"] and column(table, 2)[:2] == ["0.2", "16"]
        await pilot.press("f")
        assert table.row_count > 40  # every key, unchanged ones too


async def test_overlay_draws_one_series_per_run_and_summary_sorts(tmp_path):
    runs, a, b = fixture_runs(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot)
        screen.query_one(TabbedContent).active = "overlay"
        await pilot.pause()
        series = screen.overlay_series()
        assert [s.label for s in series] == [a.name, b.name] and all(len(s.steps) == 3 for s in series)
        chart = screen.query_one("#overlay-chart", ChartView)
        assert f"━ {a.name}" in chart.render().plain and f"━ {b.name}" in chart.render().plain
        await pilot.press("right_square_bracket")  # next metric: val loss, drawn as points
        assert screen.overlay_series()[0].style == "points"

        screen.query_one(TabbedContent).active = "summary"
        await pilot.pause()
        table = screen.query_one("#summary-table", DataTable)
        best = column(table, 5)
        assert best == sorted(best)  # sorted by best val loss, ascending
        screen.sort_summary("best_val_loss")  # what clicking the header again does
        assert column(table, 5) == sorted(best, reverse=True)
        await pilot.press("x")
        await pilot.pause()
        # In their own folder: a later `orpo-tui summary runs/*` never meets one.
        exported = list((runs / ".exports").glob("compare-*.csv"))
        assert len(exported) == 1 and a.name in exported[0].read_text() and not list(runs.glob("*.csv"))


async def test_tags_and_notes_are_kept_in_the_run_folder_and_filter(tmp_path):
    runs, a, b = fixture_runs(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        await pilot.press("t")  # tags for the highlighted run (B, the newest)
        await pilot.pause()
        app.screen.query_one("#name", Input).value = "best, beta-sweep"
        await pilot.press("enter")
        await pilot.pause()
        assert read_tags(b) == ["best", "beta-sweep"]
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("TextArea").text = "# higher beta helped\nmargin grew faster"
        await pilot.press("ctrl+s", "escape")
        await pilot.pause()
        assert read_notes(b).startswith("# higher beta helped")
        runs_screen = app.screen
        runs_screen.refresh_runs()
        table = runs_screen.query_one("#runs", DataTable)
        tags, note = table.get_column_index("tags"), table.get_column_index("note")
        assert column(table, tags)[0] == "best beta-sweep" and "higher beta helped" in column(table, note)[0]
        runs_screen.query_one("#run-filter", Input).value = "best"
        await pilot.pause()
        assert table.row_count == 1 and b.name in column(table, 0)[0]


async def test_run_against_preset_diff(tmp_path):
    from trainer.pure.config import dump_toml

    runs, a, b = fixture_runs(tmp_path)
    dump_toml(_config(0.1, 32), tmp_path / "presets" / "base.toml")
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f3", "down", "v")  # A (the older run); the dialog proposes its preset label
        await pilot.pause()
        assert app.screen.query_one("#name", Input).value == "base"
        await pilot.press("enter")
        await pilot.pause()
        table = app.screen.query_one("#diff-table", DataTable)
        assert column(table, 0) == ["finetune.rank", "derived.peft_alpha"]
        assert column(table, 2)[0] == "32"


async def test_f3_from_a_view_goes_back_to_the_runs_list(tmp_path):
    """F3 ("Runs" in the footer) from the comparison or a run's monitor returns to the list."""
    from tui.screens.monitor import MonitorScreen

    runs, a, b = fixture_runs(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_compare(pilot)
        await pilot.press("f3")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)
        await pilot.press("f3")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and len(app.screen_stack) == 1
