"""Which metrics the monitor draws together: a chart per question a user asks of an ORPO
run (is it learning? is the preference separating? is it stable? is it fast?)."""

from __future__ import annotations

from dataclasses import dataclass

from tui.charts import ChartSeries
from tui.series import RunSeries, ema, last_n

EMA_ALPHA = 0.2


@dataclass(frozen=True)
class ChartSpec:
    key: str
    title: str
    train: tuple[str, ...]
    val: tuple[str, ...] = ()


CHARTS = (
    ChartSpec("loss", "loss / NLL", ("loss", "nll_loss"), ("loss",)),
    ChartSpec("odds", "log-odds", ("log_odds_chosen", "log_odds_ratio"), ("log_odds_chosen",)),
    ChartSpec("rewards", "rewards", ("rewards/margins", "rewards/chosen", "rewards/rejected"), ("rewards/margins",)),
    ChartSpec("accuracy", "reward accuracy", ("rewards/accuracies",), ("rewards/accuracies",)),
    ChartSpec("lr", "learning rate", ("learning_rate",)),
    ChartSpec("speed", "tokens/s", ("tokens_per_second",)),
)


def chart_series(series: RunSeries, spec: ChartSpec, *, smooth: bool = False, last_n_reports: int | None = None) -> list[ChartSeries]:
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
