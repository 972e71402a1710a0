"""The monitor's charts at real sizes: log scale on series with values ≤ 0, labels, samples
while a run trains, the step cursor, and how fast the monitor opens."""

import math
import time

import pytest
from pilot_waits import wait_until
from textual.widgets import TabbedContent

from trainer.pure.events import MetricsWriter
from trainer.pure.metrics import LEARNING_RATE, LOG_ODDS_RATIO, LOSS, ORPO_METRICS, REWARDS_MARGINS
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import write_status
from tui.app import make_app
from tui.charts import visible_lines
from tui.screens.monitor import MonitorScreen
from tui.widgets.chart_view import ChartView

SIZES = [(160, 48), (120, 40), (100, 30), (80, 24)]


def signed_run(runs, name="20260101-000000-demo", steps=60, state="stopped"):
    """A run whose margins and log-odds cross zero, with zeros and a NaN, and a flat lr."""
    run = RunFolder(runs / name)
    run.root.mkdir(parents=True)
    write_status(run.root, state=state, step=steps, total_steps=100, started_at=1.0, ended_at=2.0)
    with MetricsWriter(run.metrics) as w:
        for step in range(1, steps + 1):
            values = {m: math.sin(step / 7) for m in ORPO_METRICS}
            values[LOSS] = 2.0 - step / steps
            values[REWARDS_MARGINS] = 0.0 if step % 10 == 0 else (step - 30) / 10
            values[LOG_ODDS_RATIO] = math.nan if step == 17 else -abs(math.cos(step))
            w.write("train", step, time=1000.0 + step, **values, **{LEARNING_RATE: 1e-3, "tokens_per_second": 50.0,
                                                                   "pairs_per_second": 2.0, "peak_memory_gb": 0.1})
            if step % 20 == 0:
                w.write("val", step, time=1000.5 + step, **{m: math.cos(step) for m in ORPO_METRICS}, val_time=0.1)
                w.write("sample", step, time=1000.6 + step, prompt=f"p{step}", completion=f"c{step}", index=0)
    return run


def chart_lines(screen, key):
    return [line for line in screen.query_one(f"#chart-{key}", ChartView).render().plain.split("\n")]


@pytest.mark.parametrize("size", SIZES)
async def test_log_y_on_signed_series_keeps_the_app_alive(tmp_path, size):
    runs = tmp_path / "runs"
    run = signed_run(runs)
    app = make_app(tmp_path, runs)
    async with app.run_test(size=size) as pilot:
        app.open_monitor(run.root)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        await pilot.pause(0.3)
        await pilot.press("l")
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, MonitorScreen) and screen.log_y
        for view in screen.query(ChartView):
            if view.display:
                text = view.render().plain
                assert "Traceback" not in text and len(text.split("\n")) == view.content_size.height
        margins = visible_lines(screen.query_one("#chart-rewards", ChartView).render().plain)[0]
        assert "hidden" in margins
        await pilot.press("l")
        await pilot.pause(0.1)
        assert app.is_running and isinstance(app.screen, MonitorScreen)


def shown_text(widget) -> str:
    """What a widget really shows inside its own box (lines past its height are cut)."""
    from textual.geometry import Region

    strips = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_samples_appear_while_the_run_trains_and_brackets_step_through_them(tmp_path, size, monkeypatch):
    from tui.screens import monitor

    # No chart redraw after the first: samples that waited for one would never show.
    monkeypatch.setattr(monitor, "CHART_MIN_INTERVAL", 3600.0)
    runs = tmp_path / "runs"
    run = signed_run(runs, steps=10, state="running")
    app = make_app(tmp_path, runs)
    async with app.run_test(size=size) as pilot:
        app.open_monitor(run.root)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        screen = app.screen
        await wait_until(pilot, lambda: screen.query("#samples"), 5, "the samples pane")
        samples = screen.query_one("#samples")
        await wait_until(pilot, lambda: "No sample" in shown_text(samples), 5, "the empty samples pane")
        with MetricsWriter(run.metrics) as w:
            for step in (20, 40):
                w.write("val", step, **{LOSS: 1.0})
                w.write("sample", step, prompt=f"prompt at {step}", completion=f"answer at {step}", index=0)
                w.write("sample", step, prompt=f"second prompt {step}", completion=f"second answer {step}", index=1)
        # Shown by the poll that reads them, not at the next chart redraw, and every line
        # shown, not only the title. (Waited for by the poll, not by a clock: 4 s could pass
        # before a poll on a loaded machine.)
        await wait_until(pilot, lambda: any(s.get("step") == 40 for s in screen.series.samples), 30,
                         "the poll that reads the samples")
        assert "answer at 40" in str(samples.render())
        await wait_until(pilot, lambda: "answer at 40" in shown_text(samples), 30, "the live samples drawn whole")
        assert "prompt at 40" in shown_text(samples)
        await pilot.press("left_square_bracket")
        await pilot.pause(0.1)
        assert "answer at 20" in shown_text(samples) and "step 20" in shown_text(samples)
        await pilot.press("left_square_bracket")  # there is nothing earlier: it stays
        await pilot.pause(0.1)
        assert "answer at 20" in shown_text(samples)
        await pilot.press("right_square_bracket")
        await pilot.pause(0.1)
        assert "answer at 40" in shown_text(samples)
        ids = {b.id for b in screen.active_bindings and [a.binding for a in screen.active_bindings.values()]}
        assert {"monitor.samples_prev", "monitor.samples_next"} <= ids


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_overlay_legend_names_every_run(tmp_path, size):
    from test_tui_compare import fixture_runs, open_compare

    runs, a, b = fixture_runs(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=size) as pilot:
        screen = await open_compare(pilot)
        screen.query_one(TabbedContent).active = "overlay"
        await pilot.pause(0.2)
        labels = [s.label for s in screen.overlay_series()]
        assert len(set(labels)) == 2  # two runs of one preset are still two names
        header = visible_lines(screen.query_one("#overlay-chart", ChartView).render().plain)[0]
        for label in labels:
            head, _, tail = label.partition("…")
            shown = [w for w in header.split() if w.startswith(label[:3])]
            assert shown, (label, header)
        assert len([w for w in header.split() if w.startswith("2024")]) == 2, header


def test_legend_shortens_each_name_rather_than_dropping_runs():
    from tui.charts import ChartSeries, render_chart

    names = ["20240101-120000-base", "20240101-130000-base-2", "20240102-090000-lr-sweep-3"]
    series = [ChartSeries(n, [1, 2], [1.0, 2.0]) for n in names]
    title = "train loss  ([ ] metric · m smooth · l log · a range · w step/time)"
    for width in (40, 60, 78, 120):
        header = visible_lines(render_chart(series, width, 10, title=title))[0]
        assert len(header) <= width
        entries = header.split("━ ")[1:]
        assert len(entries) == 3, header
        # Cut in the middle: what tells the runs apart is often at the end.
        assert len({e.strip() for e in entries}) == 3, header
        assert entries[1].strip().endswith("-2") and entries[2].strip().endswith("-3"), header


async def test_the_monitor_paints_before_it_reads_a_long_run(tmp_path, monkeypatch):
    # Opening took seconds on a long run: every metric was parsed, and six charts drawn, on
    # the event loop before the first frame. Now the catch-up read runs in a thread after it.
    import threading

    from trainer.pure.events import MetricsTail

    runs = tmp_path / "runs"
    run = signed_run(runs, steps=200)
    # Long: over the size the monitor reads before its first frame.
    monkeypatch.setattr("tui.screens.monitor.INLINE_METRICS_BYTES", run.metrics.stat().st_size - 1)
    reads = []

    class Tail(MetricsTail):
        def read_new(self, *args, **kwargs):
            reads.append(threading.current_thread() is threading.main_thread())
            return super().read_new(*args, **kwargs)

    monkeypatch.setattr("tui.screens.monitor.MetricsTail", Tail)
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_monitor(run.root)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        screen = app.screen
        await wait_until(pilot, lambda: screen.series.last_step == 200, 10, "the metrics")
        assert reads[0] is False  # the first, whole-file read was off the event loop
        await wait_until(pilot, lambda: "loss" in screen.query_one("#chart-loss", ChartView).render().plain, 10, "a chart")


async def test_a_short_runs_charts_are_in_the_monitors_first_frame(tmp_path):
    # A run of a few hundred reports was painted empty first, its metrics read in a thread
    # after that frame and the charts drawn in a second one: two layouts and two paints
    # before the user saw a curve. Its metrics are now read while the screen mounts.
    runs = tmp_path / "runs"
    run = signed_run(runs, steps=300)
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = MonitorScreen(app.workspace, run.root)
        await app.push_screen(screen)  # returns once the screen is mounted, before it paints
        assert screen.series.last_step == 300
        assert [v.version for v in screen.query(ChartView)] == [(screen.series.version, False, None)] * 6


def _events(run, kind):
    import json

    return {e["step"]: e for e in map(json.loads, run.metrics.read_text().splitlines()) if e["event"] == kind}


def _readout_values(text: str) -> dict[str, str]:
    out = {}
    for part in text.split("  ·  ")[2:]:
        name, value = part.rsplit(" ", 1) if "@" not in part else part.rsplit(" ", 2)[:2]
        out[name] = value
    return out


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_step_cursor_reads_exact_values_at_a_step(tmp_path, size):
    from trainer.pure.metrics import CHARTS, metric_label

    runs = tmp_path / "runs"
    run = signed_run(runs, steps=60)
    train, val = _events(run, "train"), _events(run, "val")
    app = make_app(tmp_path, runs)
    async with app.run_test(size=size) as pilot:
        app.open_monitor(run.root)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        screen = app.screen
        await wait_until(pilot, lambda: screen.series.last_step == 60, 10, "the metrics")
        readout = screen.query_one("#readout")
        await pilot.press("right")  # the first press: the newest report
        await pilot.pause(0.1)
        assert screen.cursor_step == 60
        await pilot.press("left", "left", "left")
        await pilot.pause(0.1)
        assert screen.cursor_step == 57
        await pilot.press("home")
        assert screen.cursor_step == 1
        await pilot.press("end", "left", "left", "left", "left", "left", "left", "left", "left", "left", "left")
        await pilot.pause(0.1)
        assert screen.cursor_step == 50
        for step in (50, 40, 20):
            screen.move_cursor(step)
            await pilot.pause(0.05)
            text = str(readout.render())
            assert text.startswith(f"step {step}  ·  ")
            assert time.strftime("%H:%M:%S", time.localtime(train[step]["time"])) in text
            values = _readout_values(text)
            shown = [spec for spec in CHARTS if screen.query_one(f"#chart-{spec.key}", ChartView).display]
            for spec in shown:
                for name in spec.train:
                    want = train[step][name]
                    got = values[metric_label(name)]
                    assert (math.isnan(want) and got == "nan") or float(got) == pytest.approx(want, rel=1e-5), name
                for name in spec.val:
                    at = max(s for s in val if s <= step)
                    got = values[f"val {metric_label(name)}"]
                    assert float(got) == pytest.approx(val[at][name], rel=1e-5), name
                    assert (f"@{at}" in text) == (at != step)
            # The marker is drawn on every shown chart.
            for spec in shown:
                plain = screen.query_one(f"#chart-{spec.key}", ChartView).render().plain
                assert "┬" in plain.split("\n")[1] or "│" in "".join(line[8:-1] for line in plain.split("\n")[2:-3])


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_overlay_step_cursor_reads_every_runs_value(tmp_path, size):
    from test_tui_compare import fixture_runs, open_compare

    runs, a, b = fixture_runs(tmp_path)
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=size) as pilot:
        screen = await open_compare(pilot)
        await pilot.press("2")
        await pilot.pause(0.2)
        await pilot.press("right")  # the first press: the newest report
        await pilot.pause(0.1)
        assert screen.cursor == 30 and screen.query_one(TabbedContent).active == "overlay"
        await pilot.press("left")
        await pilot.pause(0.1)
        assert screen.cursor == 20
        readout = str(screen.query_one("#overlay-readout").render())
        assert readout.startswith("step 20  ·  ")
        for run in (a, b):
            want = _events(RunFolder(run), "train")[20]["loss"]
            assert f"{run.name} {want:.6g}" in readout
        chart = screen.query_one("#overlay-chart", ChartView).render().plain
        assert "┬" in chart.split("\n")[1]  # the marker reaches the frame
        await pilot.press("right_square_bracket")  # val loss
        await pilot.pause(0.1)
        readout = str(screen.query_one("#overlay-readout").render())
        for run in (a, b):
            assert f"{run.name} {_events(RunFolder(run), 'val')[20]['loss']:.6g}" in readout
        await pilot.press("home")
        assert screen.cursor == 10
        await pilot.press("1")  # on the diff tab left/right are not the cursor's
        await pilot.pause(0.1)
        await pilot.press("right")
        assert screen.cursor == 10
