"""Nothing on screen is cut without saying so, at 80x24 and at 160x48: every table fits its
width (a cut cell or header ends in "…"), the footer keeps quit, F1 and F2-F4 and the
screen's main keys whole (also beside the F1 panel), a finished run's chart of a metric it
never logged says so instead of waiting for ever, and the train command is the same
wherever it is shown. Each test reads the screen as it is drawn, on the committed fixture
runs and presets that the snapshot tests use."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex

import pytest
from pilot_waits import footer_settled, wait_until
from test_snapshots import COMPLETED, SCREENS, _compare, _highlight, _open_monitor, _runs_list, app_with_runs  # noqa: F401
from textual.widgets import DataTable, Input, Static

from trainer.pure.run_folder import RunFolder
from trainer.pure.trainer_process import PROG, TRAINER, train_argv
from tui.charts import NO_VALUES, WAITING
from tui.fit import ELLIPSIS, clip, fit_widths
from tui.widgets.show_command import ShowCommand

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@contextlib.asynccontextmanager
async def shown(app, show, size: str):
    """`app` running at `size`, on the screen `show` opens."""
    async with app.run_test(size=SIZES[size]) as pilot:
        await show(pilot)
        # A focus change or a dialog rebuilds the footer a refresh later: read it once it has.
        await wait_until(pilot, lambda: footer_settled(app.screen), 30, "the footer's keys")
        await pilot.pause(0.3)
        yield app


def screen_lines(app) -> list[str]:
    """The screen's rows as drawn (the compositor's own output, text only)."""
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]


def footer(app) -> str:
    return screen_lines(app)[-1]


def badly_cut(app, table: DataTable) -> list[str]:
    """Every header or cell in view of `table` that the screen shows neither whole nor as a
    start that ends in "…": cut at a column edge or at the screen's, or not shown at all."""
    lines = screen_lines(app)
    region = table.content_region
    pad = table.cell_padding
    rows = [[column.label for column in table.ordered_columns]]
    rows += [table.get_row_at(i) for i in range(table.row_count)]
    bad = []
    for n, row in enumerate(rows[: region.height]):  # the rows in view (the table is not scrolled)
        line = lines[region.y + n]
        x = region.x
        for column, value in zip(table.ordered_columns, row):
            width = column.get_render_width(table) - 2 * pad
            shown = line[x + pad: min(x + pad + width, region.right)].rstrip()
            full = str(value)
            whole = shown == full
            marked = shown.endswith(ELLIPSIS) and full.startswith(shown[:-1]) and len(shown) <= len(full)
            if not (whole or marked):
                bad.append(f"row {n - 1} {column.key.value}: {full!r} shown as {shown!r}")
            x += column.get_render_width(table)
    return bad


# ------------------------------------------------------------------ the shared rule


def test_clip_marks_every_cut():
    assert clip("orpo.beta", 20) == "orpo.beta"
    assert clip("orpo.beta", 9) == "orpo.beta"
    assert clip("orpo.beta", 5) == "orpo…"
    assert clip("orpo.beta", 1) == "…"
    assert clip("orpo.beta", 0) == ""


@pytest.mark.parametrize("available", range(0, 140, 7))
def test_fit_widths_fits_and_cuts_elastic_columns_first(available):
    natural = [22, 9, 7, 8, 60, 4]  # run, state, step, val loss, note, beta
    cells = [22, 9, 7, 6, 60, 3]
    widths = fit_widths(natural, available, elastic={0, 4}, cells=cells)
    floors = [8, 2, 2, 2, 8, 2]
    assert all(min(n, f) <= w <= n for w, n, f in zip(widths, natural, floors))
    assert sum(widths) <= available or widths == [min(n, f) for n, f in zip(natural, floors)]
    if sum(natural) <= available:
        assert widths == natural
    fixed_cut = any(w < n for i, (w, n) in enumerate(zip(widths, natural)) if i not in (0, 4))
    if fixed_cut:
        # No other column is cut while the elastic ones are still above 16 columns.
        assert widths[0] <= 16 and widths[4] <= 16


# ------------------------------------------------------------------ tables


async def _runs_with_help(pilot):
    await _runs_list(pilot, COMPLETED)
    await pilot.press("f1")
    await pilot.pause(0.3)


async def _all_keys_diff(pilot):
    await _compare(pilot, "1")
    await pilot.press("f")  # every key: the description and paths are long values
    await pilot.pause(0.3)


TABLES = {
    "runs": (SCREENS["runs"], "#runs"),
    "runs_beside_help": (_runs_with_help, "#runs"),
    "compare_summary": (SCREENS["compare_summary"], "#summary-table"),
    "compare_diff": (_all_keys_diff, "#diff-table"),
    "presets": (lambda pilot: _highlight(pilot, "demo"), "#presets"),
    "queue": (SCREENS["queue"], "#queue"),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", TABLES)
async def test_every_table_fits_and_marks_its_cuts(app_with_runs, name, size):  # noqa: F811
    show, selector = TABLES[name]
    async with shown(app_with_runs(), show, size) as app:
        table = app.screen.query_one(selector, DataTable)
        assert table.row_count
        assert table.virtual_size.width <= table.scrollable_content_region.width, "wider than the screen"
        assert badly_cut(app, table) == []


async def test_a_narrowed_table_refits_and_a_widened_one_shows_everything(app_with_runs):  # noqa: F811
    app = app_with_runs()
    async with app.run_test(size=(160, 48)) as pilot:
        await _highlight(pilot, "demo")
        table = app.screen.query_one("#presets", DataTable)
        description = str(table.get_row_at(1)[5])
        assert description in "\n".join(screen_lines(app))
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)
        assert badly_cut(app, table) == []
        assert description not in "\n".join(screen_lines(app))
        await pilot.resize_terminal(160, 48)
        await pilot.pause(0.3)
        assert description in "\n".join(screen_lines(app))


# ------------------------------------------------------------------ footers


async def _preset_list_on_table(pilot):
    await _highlight(pilot, "demo")
    pilot.app.screen.query_one(DataTable).focus()
    await pilot.pause(0.3)


MAIN_KEYS = {
    "runs": (SCREENS["runs"], ["x Stop", "u Resume", "c Compare"]),
    "runs_beside_help": (_runs_with_help, ["x Stop", "u Resume", "c Compare"]),
    "monitor": (_open_monitor, ["esc Back", "x Stop", "u Resume"]),
    "compare": (SCREENS["compare_diff"], ["esc Back", "f Only diffs", "x Export"]),
    "queue": (SCREENS["queue"], ["p Pause/go", "x Cancel", "g Run queue"]),
    "presets": (_preset_list_on_table, ["s Start run", "w Sweep", "n New"]),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", MAIN_KEYS)
async def test_the_footer_keeps_the_keys_users_need_whole(app_with_runs, name, size):  # noqa: F811
    show, keys = MAIN_KEYS[name]
    async with shown(app_with_runs(), show, size) as app:
        line = footer(app)
        for key in keys + ["^q Quit", "f1 Keys", "f2 Presets", "f3 Runs", "f4 Queue"]:
            assert re.search(re.escape(key) + "(?=[ ▏]|$)", line), f"{key!r} missing from the footer {line!r}"
        # Whatever does not fit is marked: the palette key in full, or "^p …".
        assert line.rstrip().endswith(("^p palette", f"^p {ELLIPSIS}"))
        if name == "runs_beside_help":
            assert app.screen.query("HelpPanel")
            # The footer runs under the panel too: nothing of the panel is painted into it.
            assert "▏" not in line.split("f4 Queue")[0]


# ------------------------------------------------------------------ empty charts


@pytest.mark.parametrize("active", [False, True])
async def test_a_finished_runs_chart_of_a_metric_it_never_logged_says_so(app_with_runs, active):  # noqa: F811
    app = app_with_runs()
    run = RunFolder(app.workspace.runs_dir / COMPLETED)
    assert "tokens_per_second" not in run.metrics.read_text()
    if active:
        # The same run while its trainer (this process stands in for it) still trains.
        status = json.loads(run.status.read_text())
        status.update(state="running", pid=os.getpid(), ended_at=None)
        run.status.write_text(json.dumps(status))
    async with app.run_test(size=(160, 48)) as pilot:
        await _open_monitor(pilot)
        await pilot.pause(0.5)
        text = "\n".join(screen_lines(app))
        assert "tokens/s" in text
        if active:
            assert WAITING in text and NO_VALUES not in text
        else:
            assert NO_VALUES in text and WAITING not in text


# ------------------------------------------------------------------ the train command


@pytest.mark.parametrize("size", SIZES)
async def test_the_train_command_is_the_same_in_the_list_and_the_dialog(app_with_runs, size):  # noqa: F811
    app = app_with_runs()
    async with app.run_test(size=SIZES[size]) as pilot:
        await _preset_list_on_table(pilot)
        screen = app.screen
        entry = screen.highlighted
        detail = str(screen.query_one("#detail", Static).render()).splitlines()
        await pilot.press("x")
        await pilot.pause(0.3)
        assert isinstance(app.screen, ShowCommand)
        command = app.screen.query_one("#command", Input).value
        assert detail[-1].strip() == command
        # The arguments the app's own start passes, runs folder included, in the foreground.
        assert shlex.split(command) == [PROG, *train_argv(entry.path, app.workspace.runs_dir, log_only=False)[len(TRAINER):]]
        assert shlex.split(command)[-2:] == ["--runs-dir", str(app.workspace.runs_dir)]
