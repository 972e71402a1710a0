"""The monitor's charts (which metrics are drawn together: trainer.pure.metrics.CHARTS) turned
into chart series from a run's metrics."""

from __future__ import annotations

from trainer.pure.metrics import CHARTS, Chart
from tui.charts import ChartSeries
from tui.series import RunSeries, ema, last_n

__all__ = ["CHARTS", "EMA_ALPHA", "chart_series"]

EMA_ALPHA = 0.2


def chart_series(series: RunSeries, spec: Chart, *, smooth: bool = False, last_n_reports: int | None = None) -> list[ChartSeries]:
    """Training curves as lines (optionally EMA-smoothed) and validation as points on top."""
    out = []
    first_step = None
    for name in spec.train:
        steps, values = series.train(name)
        if last_n_reports:
            steps, values = last_n(steps, values, last_n_reports)
        if steps:
            first_step = steps[0] if first_step is None else min(first_step, steps[0])
        out.append(ChartSeries(name, list(steps), ema(values, EMA_ALPHA) if smooth else list(values)))
    for name in spec.val:
        steps, values = series.val(name)
        if first_step is not None and last_n_reports:
            keep = [i for i, s in enumerate(steps) if s >= first_step]
            steps, values = [steps[i] for i in keep], [values[i] for i in keep]
        out.append(ChartSeries(f"val {name}", list(steps), list(values), style="points"))
    return out
