"""Run series, chart rendering, the chart widget and the health alarms of the monitor."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from trainer.pure.events import MetricsTail, MetricsWriter
from trainer.pure.metrics import ORPO_METRICS
from tui import charts
from tui.alarms import FLAT, NONFINITE, OVERFIT, PINNED, health_alarms
from tui.charts import WAITING, ChartSeries, render_chart, visible_lines
from tui.series import RunSeries, downsample, ema, last_n
from tui.widgets.chart_view import ChartView

NAN = float("nan")


def _train(step, **values):
    return {"v": 1, "event": "train", "step": step, "time": 1000.0 + step, **values}


def _val(step, **values):
    return {"v": 1, "event": "val", "step": step, "time": 1000.0 + step, **values}


def test_series_and_alarms_are_pure():
    code = (
        "import json, sys, tui.series, tui.alarms\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'plotext', 'mlx', 'rich'})))"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# -- RunSeries ------------------------------------------------------------------------------


def test_series_from_a_real_metrics_file_keeps_nan(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.write("status", 0, state="running", resumed=False)
        w.write("val", 0, **{"loss": 2.0, "rewards/accuracies": 0.5})
        w.write("train", 10, **{"loss": 1.5, "nll_loss": 1.2, "rewards/accuracies": 0.5})
        w.write("train", 20, **{"loss": float("nan"), "nll_loss": float("inf"), "rewards/accuracies": 0.75})
        w.write("checkpoint", 20, path="adapters/0000020_adapters.safetensors")
        w.write("sample", 20, prompt="hi", completion="nan")
    series = RunSeries()
    assert series.add(MetricsTail(path).read_new()) == 6
    steps, values = series.train("loss")
    assert list(steps) == [10, 20]
    assert values[0] == 1.5 and math.isnan(values[1])
    assert series.train("nll_loss")[1][1] == math.inf
    assert list(series.val("loss")[1]) == [2.0]
    assert series.last_train["rewards/accuracies"] == 0.75 and series.last_train["step"] == 20
    assert series.last_val["step"] == 0
    assert [e["step"] for e in series.checkpoints] == [20]
    assert series.samples[0]["completion"] == "nan"  # generated text is not a number
    assert series.status_events[0]["state"] == "running"
    assert series.track("train", "loss").times[1] > 0
    assert series.names("train") == ["loss", "nll_loss", "rewards/accuracies"]


def test_version_changes_only_when_something_was_added():
    series = RunSeries()
    v0 = series.version
    series.add([])
    assert series.version == v0
    series.add([{"event": "mystery", "step": 1}, {"event": "train", "step": "x", "loss": 1.0}])
    assert series.version == v0 and series.ignored == 2
    series.add([_train(1, loss=1.0)])
    assert series.version != v0


def test_unknown_metrics_flags_and_missing_series():
    series = RunSeries()
    series.add([_train(1, loss=1.0, custom=3, flag=True, note="x", huge=10**400)])
    assert series.names("train") == ["loss", "custom", "huge"]
    assert series.train("huge")[1][0] == math.inf and series.last_train["huge"] == math.inf
    assert list(series.train("absent")[0]) == [] and list(series.val("loss")[1]) == []


def test_resumed_run_replaces_the_steps_it_reports_again():
    series = RunSeries()
    series.add([_train(s, loss=float(s)) for s in (10, 20, 30)])
    series.add([_train(25, loss=NAN)])  # the crashed attempt's tail is superseded
    series.add([_train(30, loss=0.5)])
    steps, values = series.train("loss")
    assert list(steps) == [10, 20, 25, 30] and values[-1] == 0.5
    assert series.track("train", "loss").bad_since is None
    assert series.track("train", "loss").first_bad == (25, pytest.approx(NAN, nan_ok=True))


# -- transforms -----------------------------------------------------------------------------


def test_ema_matches_the_recurrence_and_survives_nan():
    out = ema([1.0, NAN, 3.0, math.inf, 5.0], 0.5)
    assert out[0] == 1.0 and math.isnan(out[1]) and out[3] == math.inf
    assert out[2] == pytest.approx(2.0) and out[4] == pytest.approx(3.5)
    assert ema([NAN, 2.0], 0.1)[1] == 2.0
    assert ema([1.0, 2.0], 1.0) == [1.0, 2.0]
    with pytest.raises(ValueError):
        ema([1.0], 0.0)


def test_last_n():
    assert last_n([1, 2, 3], [4.0, 5.0, 6.0], 2) == ([2, 3], [5.0, 6.0])
    assert last_n([1], [4.0], 5) == ([1], [4.0])
    assert last_n([1], [4.0], 0) == ([], [])


def test_downsample_keeps_extremes_ends_and_order():
    rng = random.Random(0)
    n, width = 100_000, 120
    steps = list(range(1, n + 1))
    values = [math.exp(-i / n) + rng.random() * 0.01 for i in range(n)]
    values[31_337], values[77_777] = 5.0, -3.0  # one-point spikes
    ds, dv = downsample(steps, values, width)
    assert len(ds) <= 2 * width + 2
    assert max(dv) == 5.0 and min(dv) == -3.0
    assert ds[0] == 1 and ds[-1] == n and dv[-1] == values[-1]
    assert ds == sorted(set(ds))
    assert all(values[s - 1] == v for s, v in zip(ds, dv))


def test_downsample_drops_non_finite_and_leaves_short_series_alone():
    steps = list(range(1000))
    values = [float(i % 7) for i in steps]
    values[0], values[500], values[999] = NAN, math.inf, NAN
    ds, dv = downsample(steps, values, 10)
    assert all(math.isfinite(v) for v in dv) and len(ds) <= 22
    assert ds[0] == 1 and ds[-1] == 998 and max(dv) == 6.0 and min(dv) == 0.0
    assert downsample([1, 2, 3], [1.0, NAN, 3.0], 10) == ([1, 3], [1.0, 3.0])
    assert downsample([], [], 10) == ([], [])


# -- render_chart ---------------------------------------------------------------------------


def _loss_series(n=2000):
    steps = list(range(1, n + 1))
    train = [2 * math.exp(-s / 500) + 0.1 for s in steps]
    val_steps = list(range(0, n + 1, 250))
    return [
        ChartSeries("train loss", steps, train),
        ChartSeries("val loss", val_steps, [2 * math.exp(-s / 500) + 0.2 for s in val_steps], style="points"),
    ]


@pytest.mark.parametrize("width,height", [(120, 20), (60, 12), (30, 6), (20, 5), (80, 3), (10, 2), (40, 1)])
def test_render_chart_is_exactly_the_size_asked(width, height):
    lines = visible_lines(render_chart(_loss_series(), width, height, title="loss"))
    assert len(lines) == height
    assert max(len(line) for line in lines) <= width


def test_render_chart_draws_a_legend_and_the_data():
    out = render_chart(_loss_series(), 100, 20, title="loss")
    lines = visible_lines(out)
    assert "loss" in lines[0] and "train loss" in lines[0] and "val loss" in lines[0]
    assert sum(line.count(charts.POINT_GLYPH) for line in lines[1:]) >= 5
    assert any(ch in "⠁⠂⠄⡀⢀⠈⠐⠠⣀⠉" for ch in "".join(lines[1:]))
    assert "\x1b[" in out  # coloured


def test_render_chart_log_scale_with_zeros_and_nan():
    series = [ChartSeries("loss", [1, 2, 3, 4, 5], [0.0, 1.0, NAN, 0.1, -1.0])]
    lines = visible_lines(render_chart(series, 60, 12, log_y=True))
    assert len(lines) == 12 and max(map(len, lines)) <= 60
    assert "too small" not in "".join(lines) and "waiting" not in "".join(lines)


def test_render_chart_without_data_says_so():
    for series in ([], [ChartSeries("loss", [], [])]):
        lines = visible_lines(render_chart(series, 50, 10, title="loss"))
        assert len(lines) == 10 and any(WAITING in line for line in lines)
    lines = visible_lines(render_chart([ChartSeries("loss", [1, 2], [0.0, -1.0])], 50, 10, log_y=True))
    assert any("log scale" in line for line in lines)


def test_render_chart_reduces_a_whole_track_and_keeps_its_spike():
    n = 50_000
    values = [1.0 + (i % 10) * 0.01 for i in range(n)]
    values[12_345] = 10.0
    lines = visible_lines(render_chart([ChartSeries("loss", range(n), values)], 60, 10))
    assert float(lines[2].split("┤")[0]) == 10.0  # the top y tick is the spike
    assert "20k" in lines[-1] or "20k" in lines[-2]


def test_legend_that_does_not_fit_is_cut():
    series = [ChartSeries(f"a rather long series name {i}", [1, 2], [1.0, 2.0]) for i in range(4)]
    header = visible_lines(render_chart(series, 50, 10, title="loss"))[0]
    assert len(header) <= 50 and header.count("…") == 4
    assert [entry.strip()[-1] for entry in header.split("━ ")[1:]] == ["0", "1", "2", "3"]  # every one named


def test_nice_ticks_and_labels():
    assert charts.nice_ticks(0, 2000, 5) == [0, 500, 1000, 1500, 2000]
    assert charts.nice_ticks(1, 3, 10) == [1, 2, 3]
    assert charts.step_label(12500.0) == "12.5k" and charts.step_label(950.0) == "950"
    assert charts.step_label(2_000_000.0) == "2M"


# -- ChartView ------------------------------------------------------------------------------


class _ChartApp(App):
    def compose(self) -> ComposeResult:
        yield ChartView(_loss_series(), title="loss", version=1)


async def test_chart_view_renders_once_per_version_and_size():
    app = _ChartApp()
    async with app.run_test(size=(80, 20)) as pilot:
        view = app.query_one(ChartView)
        await pilot.pause()
        text = view.render().plain
        assert "train loss" in text and len(text.splitlines()) == 20
        first = view.renders
        assert first >= 1

        assert view.update_series(_loss_series(), 1) is False
        view.refresh()
        await pilot.pause()
        view.render()
        assert view.renders == first  # nothing changed: the cached chart is reused

        assert view.update_series(_loss_series(500), 2) is True
        await pilot.pause()
        assert view.renders == first + 1

        await pilot.resize_terminal(60, 15)
        await pilot.pause()
        assert view.renders == first + 2
        assert len(view.render().plain.splitlines()) == 15


async def test_chart_view_with_a_source_callable_gets_its_width():
    widths = []

    def source(width):
        widths.append(width)
        return [ChartSeries("loss", *downsample(list(range(10_000)), [1.0 / (i + 1) for i in range(10_000)], width))]

    class SourceApp(App):
        def compose(self) -> ComposeResult:
            yield ChartView(source, log_y=True)

    async with SourceApp().run_test(size=(70, 12)) as pilot:
        await pilot.pause()
        assert widths and widths[-1] == 70
        assert "loss" in pilot.app.query_one(ChartView).render().plain


# -- alarms ---------------------------------------------------------------------------------


def _healthy(steps=400, every=10, seed=1):
    """A run that learns: noisy falling loss, accuracy rising from near chance,
    validation loss falling with it."""
    rng = random.Random(seed)
    events = []
    for step in range(every, steps + 1, every):
        loss = 1.5 * math.exp(-step / 200) + 0.4
        acc = min(1.0, 0.5 + 0.4 * step / steps + rng.uniform(-0.2, 0.2))
        values = {name: rng.uniform(-1, 1) for name in ORPO_METRICS}
        values.update({"loss": loss * (1 + rng.uniform(-0.05, 0.05)), "rewards/accuracies": acc})
        events.append(_train(step, **values))
        if step % 100 == 0:
            events.append(_val(step, loss=loss + 0.1, **{"rewards/accuracies": acc}))
    return events


def _series(events):
    series = RunSeries()
    series.add(events)
    return series


def test_healthy_run_raises_no_alarm():
    assert health_alarms(_series(_healthy()), total_steps=400) == []
    assert health_alarms(_series([])) == []


def test_nan_alarm_names_metric_and_step():
    events = _healthy(100) + [_train(110, loss=1.0, nll_loss=NAN), _train(120, loss=1.0, nll_loss=NAN)]
    alarms = health_alarms(_series(events))
    assert [(a.kind, a.since_step) for a in alarms] == [(NONFINITE, 110)]
    assert alarms[0].message == "nll_loss is nan since step 110"

    events = _healthy(100) + [_val(110, loss=math.inf)]
    [alarm] = health_alarms(_series(events))
    assert alarm.message == "val loss is inf since step 110"


def test_recovered_nan_is_still_reported():
    events = _healthy(100) + [_train(110, loss=NAN), _train(120, loss=1.0)]
    [alarm] = health_alarms(_series(events))
    assert alarm.kind == NONFINITE and "was nan at step 110" in alarm.message


def test_flat_loss_alarm_traces_back_to_where_it_stopped_moving():
    events = _healthy(200) + [_train(s, loss=0.6931, **{"rewards/accuracies": 0.5}) for s in range(210, 510, 10)]
    [alarm] = health_alarms(_series(events), flat_reports=20)
    assert alarm.kind == FLAT and alarm.since_step == 210
    assert "since step 210" in alarm.message and "0.6931" in alarm.message
    # Fewer flat reports than the window: not yet.
    assert health_alarms(_series(events[:30]), flat_reports=20) == []


def test_accuracy_pinned_early_at_one_and_at_zero():
    pinned = [_train(s, loss=2.0 - s / 100, **{"rewards/accuracies": 1.0}) for s in range(10, 80, 10)]
    [alarm] = health_alarms(_series(pinned), total_steps=1000)
    assert alarm.kind == PINNED and alarm.since_step == 10
    assert "pinned at 1" in alarm.message and "7 reports" in alarm.message

    zero = [_train(s, loss=2.0 - s / 100, **{"rewards/accuracies": 0.0}) for s in range(10, 80, 10)]
    assert "pinned at 0" in health_alarms(_series(zero))[0].message

    # Moving within the early phase (10% of 1000 steps) is learning, not pinning.
    moved = pinned + [_train(80, loss=1.2, **{"rewards/accuracies": 0.75})]
    assert health_alarms(_series(moved), total_steps=1000) == []
    # Too few reports to judge.
    assert health_alarms(_series(pinned[:3])) == []


def test_val_loss_rising_while_train_falls():
    events = []
    for step in range(10, 510, 10):
        events.append(_train(step, loss=2.0 - step / 500, **{"rewards/accuracies": 0.6}))
        if step % 100 == 0:
            events.append(_val(step, loss=[1.5, 1.2, 1.25, 1.3, 1.4][step // 100 - 1]))
    [alarm] = health_alarms(_series(events))
    assert alarm.kind == OVERFIT and alarm.since_step == 200
    assert "val loss rising since step 200" in alarm.message
    # Both rising: a diverging run, not overfitting.
    both = [dict(e, loss=e["step"] / 100) if e["event"] == "train" else e for e in events]
    assert [a.kind for a in health_alarms(_series(both))] == []


# -- y axis: labels true to their rows, log scale, flat series --------------------------------


def _canvas_labels(lines, scale):
    """(canvas row, label text) of every y label, read from the rendered text."""
    out = []
    for row in range(scale.rows):
        line = lines[2 + row]  # the header, then the frame's top line
        if "┤" in line:
            out.append((row, line.split("┤", 1)[0].strip()))
    return out


def _half_unit(label: str) -> float:
    """Half of the last printed digit of a label, in the label's units."""
    mantissa, _, exponent = label.partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def _check_labels(series, width, height, log_y):
    text, scale = charts.layout_chart(series, width, height, title="t", log_y=log_y)
    lines = visible_lines(text)
    assert len(lines) == height and max(map(len, lines)) <= width
    if scale is None:
        return 0
    labels = _canvas_labels(lines, scale)
    assert len(labels) >= min(scale.rows, 2), lines
    assert len({label for _, label in labels}) == len(labels), labels  # different rows, different labels
    for row, label in labels:
        read = float(label)
        want = scale.plotted_at_row(row)
        if log_y:
            assert read > 0, (label, lines)
            error = abs(math.log10(read) - want)
            slack = math.log10(1 + _half_unit(label) / read)
        else:
            error, slack = abs(read - want), _half_unit(label)
        assert error <= scale.row_step / 4 + slack + 1e-12 * abs(want), (row, label, want, scale, "\n".join(lines))
    # The data's own extremes are drawn on the rows the mapping says.
    finite = [v for s in series for v in s.values if math.isfinite(v) and (v > 0 or not log_y)]
    if max(finite) > min(finite):
        assert scale.row_of(max(finite)) == 0 and scale.row_of(min(finite)) == scale.rows - 1
    else:  # a flat series is drawn on a labelled row, which names its value
        assert scale.row_of(finite[0]) in dict(labels)
    return len(labels)


def _random_series(rng):
    n = rng.choice([1, 2, 5, 50, 400])
    kind = rng.choice(["flat", "steps", "wide", "negative", "mixed", "noisy", "tiny"])
    steps = list(range(1, n + 1))
    if kind == "flat":
        value = rng.choice([1e-3, 0.0, -2.5, 7.0, 1e6, 3e-9])
        values = [value] * n
    elif kind == "steps":
        values = [float(rng.randint(0, 3)) for _ in steps]
    elif kind == "wide":
        values = [10 ** rng.uniform(-8, 3) for _ in steps]
    elif kind == "negative":
        values = [rng.uniform(-50, -0.001) for _ in steps]
    elif kind == "tiny":
        base = rng.uniform(-1, 1)
        values = [base + rng.uniform(0, 1e-6) for _ in steps]
    else:
        values = [rng.gauss(0, 10 ** rng.randint(-3, 3)) for _ in steps]
    if kind == "mixed":
        for _ in range(max(1, n // 10)):
            values[rng.randrange(n)] = rng.choice([NAN, math.inf, -math.inf, 0.0])
    return ChartSeries("s", steps, values)


def test_every_y_label_names_the_value_of_its_row():
    rng = random.Random(13)
    checked = 0
    for _ in range(400):
        series = [_random_series(rng)]
        if rng.random() < 0.3:
            series.append(dataclasses.replace(_random_series(rng), label="val", style="points"))
        width, height = rng.randint(20, 200), rng.randint(5, 40)
        log_y = rng.random() < 0.3
        finite = [v for s in series for v in s.values if math.isfinite(v)]
        if not finite or (log_y and not any(v > 0 for v in finite)):
            continue
        checked += _check_labels(series, width, height, log_y) > 0
    assert checked > 250


@pytest.mark.parametrize("width,height", [(38, 10), (78, 10), (52, 22), (160, 15)])
def test_loss_axis_labels_step_evenly(width, height):
    # At 80x24 a loss axis read 7.4 / 6.7 / 5.9 / 4.5 on consecutive rows.
    series = [ChartSeries("loss", list(range(1, 101)), [7.4 - 0.03 * i for i in range(100)])]
    _check_labels(series, width, height, False)
    text, scale = charts.layout_chart(series, width, height)
    rows = [row for row, _ in _canvas_labels(visible_lines(text), scale)]
    assert len({b - a for a, b in zip(rows, rows[1:])}) <= 2


def test_y_scale_matches_where_plotext_draws():
    # The mapping the labels are checked against is plotext's own: a flat line at a value
    # is drawn on the row the scale says, whose value is within half a row of it.
    rng = random.Random(3)
    for height in (6, 9, 12, 17, 30):
        for _ in range(25):
            probe = rng.uniform(0.0, 1.0)
            series = [ChartSeries("bounds", [1, 9], [0.0, 1.0], style="points"),
                      ChartSeries("probe", [2, 8], [probe, probe])]
            text, scale = charts.layout_chart(series, 60, height, xlabel="")
            lines = visible_lines(text)
            drawn = [r for r in range(scale.rows) if any(0x2800 < ord(c) < 0x2900 for c in lines[2 + r])]
            assert drawn == [scale.row_of(probe)], (probe, drawn, "\n".join(lines))
            assert abs(scale.value_at_row(drawn[0]) - probe) <= scale.row_step / 2 + scale.row_step / 4


@pytest.mark.parametrize("width,height", [(30, 6), (50, 12), (80, 20), (160, 40)])
def test_log_scale_survives_zeros_and_negatives_and_says_what_it_hid(width, height):
    for values in ([1e-3] * 5, [0.0, 1.0, -2.0, 0.1, NAN], [-1.0, 2e-4, 3e-4, 0.0, 1e-4], [0.5, 0.5, -0.5, 0.5, 0.5]):
        series = [ChartSeries("lr", [1, 2, 3, 4, 5], values)]
        lines = visible_lines(render_chart(series, width, height, title="lr", log_y=True))
        hidden = sum(1 for v in values if v <= 0)
        assert len(lines) == height
        if hidden:
            full = f"log y: {hidden} point{'s' if hidden > 1 else ''} ≤ 0 hidden"
            assert (full if width >= 80 else f"({hidden} ≤0 hidden)") in lines[0]
        else:
            assert "hidden" not in lines[0]
        _check_labels(series, width, height, True)


def test_a_flat_series_shows_its_value():
    series = [ChartSeries("learning_rate", list(range(10)), [1e-3] * 10)]
    for log_y in (False, True):
        text, scale = charts.layout_chart(series, 60, 12, log_y=log_y)
        labels = dict(_canvas_labels(visible_lines(text), scale))
        assert labels[scale.row_of(1e-3)] == "1.00e-3"
        assert 0 < scale.value_at_row(scale.rows - 1) < 1e-3 < scale.value_at_row(0) < 2e-3
