"""The metric registry: every metric a run reports, named once.

Each :class:`Metric` carries its name in ``metrics.jsonl`` (TRL's ORPO names where TRL has
one), a short label for tables and logs, its kind and the events that carry it;
:data:`CHARTS` says which monitor chart draws which metrics. The trainer's loss returns exactly :data:`ORPO_METRICS`
(a test holds it to that); the app's charts, alarms, runs list and comparison take their
names from here.

Kinds:

- ``orpo``: the loss and its parts, computed for every batch; in ``train`` events (the
  mean over the report window) and ``val`` events (the pair-weighted mean over the
  validation batches).
- ``rate``: how fast training goes (``train`` events only).
- ``memory``: memory in use (``train`` events only).
- ``timing``: seconds spent on something other than training (``val`` events only).

Pure module: no mlx, no textual.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Metric",
    "Chart",
    "METRICS",
    "BY_NAME",
    "CHARTS",
    "ORPO_METRICS",
    "RATE_METRICS",
    "TRAIN_METRICS",
    "VAL_METRICS",
    "ORPO",
    "RATE",
    "MEMORY",
    "TIMING",
    "LOSS",
    "NLL_LOSS",
    "LOG_ODDS_RATIO",
    "LOG_ODDS_CHOSEN",
    "REWARDS_CHOSEN",
    "REWARDS_REJECTED",
    "REWARDS_MARGINS",
    "REWARDS_ACCURACIES",
    "LOGPS_CHOSEN",
    "LOGPS_REJECTED",
    "LEARNING_RATE",
    "TOKENS_PER_SECOND",
    "PAIRS_PER_SECOND",
    "PEAK_MEMORY_GB",
    "ACTIVE_MEMORY_GB",
    "CACHE_MEMORY_GB",
    "RSS_GB",
    "VAL_TIME",
    "metric_label",
]

ORPO, RATE, MEMORY, TIMING = "orpo", "rate", "memory", "timing"

LOSS = "loss"
NLL_LOSS = "nll_loss"
LOG_ODDS_RATIO = "log_odds_ratio"
LOG_ODDS_CHOSEN = "log_odds_chosen"
REWARDS_CHOSEN = "rewards/chosen"
REWARDS_REJECTED = "rewards/rejected"
REWARDS_MARGINS = "rewards/margins"
REWARDS_ACCURACIES = "rewards/accuracies"
LOGPS_CHOSEN = "logps/chosen"
LOGPS_REJECTED = "logps/rejected"
LEARNING_RATE = "learning_rate"
TOKENS_PER_SECOND = "tokens_per_second"
PAIRS_PER_SECOND = "pairs_per_second"
PEAK_MEMORY_GB = "peak_memory_gb"
ACTIVE_MEMORY_GB = "active_memory_gb"
CACHE_MEMORY_GB = "cache_memory_gb"
RSS_GB = "rss_gb"
VAL_TIME = "val_time"


@dataclass(frozen=True)
class Metric:
    """One reported value: its name in metrics.jsonl, a short label, its kind and what it means."""

    name: str
    label: str
    kind: str
    help: str

    @property
    def events(self) -> tuple[str, ...]:
        """The metrics.jsonl event types that carry this metric."""
        return {ORPO: ("train", "val"), RATE: ("train",), MEMORY: ("train",), TIMING: ("val",)}[self.kind]


# TRL's order for the ORPO metrics; tables and selectors list metrics in this order.
METRICS = (
    Metric(LOSS, "loss", ORPO, "the ORPO loss: NLL of chosen minus beta times the mean log-sigmoid of the log-odds"),
    Metric(NLL_LOSS, "NLL", ORPO, "mean negative log-likelihood per token of the chosen answers"),
    Metric(LOG_ODDS_RATIO, "log σ(log-odds)", ORPO, "mean log-sigmoid of the log-odds (the odds-ratio term)"),
    Metric(LOG_ODDS_CHOSEN, "log-odds", ORPO, "mean log-odds of chosen over rejected"),
    Metric(REWARDS_CHOSEN, "reward chosen", ORPO, "beta times the mean log-prob of the chosen answers"),
    Metric(REWARDS_REJECTED, "reward rejected", ORPO, "beta times the mean log-prob of the rejected answers"),
    Metric(REWARDS_MARGINS, "margin", ORPO, "mean of beta times (logp chosen - logp rejected)"),
    Metric(REWARDS_ACCURACIES, "reward acc", ORPO, "share of pairs whose chosen reward beats the rejected one"),
    Metric(LOGPS_CHOSEN, "logp chosen", ORPO, "mean token log-prob of the chosen answers"),
    Metric(LOGPS_REJECTED, "logp rejected", ORPO, "mean token log-prob of the rejected answers"),
    Metric(LEARNING_RATE, "lr", RATE, "the learning rate at the report's last step"),
    Metric(TOKENS_PER_SECOND, "tokens/s", RATE, "tokens trained per second in the report window"),
    Metric(PAIRS_PER_SECOND, "pairs/s", RATE, "preference pairs trained per second in the report window"),
    Metric(PEAK_MEMORY_GB, "peak GB", MEMORY, "the trainer's peak MLX memory so far, in GB"),
    Metric(ACTIVE_MEMORY_GB, "active GB", MEMORY, "MLX memory held by live arrays at the report, in GB"),
    Metric(CACHE_MEMORY_GB, "cache GB", MEMORY, "MLX memory freed but kept in its buffer cache at the report, in GB"),
    Metric(RSS_GB, "RSS GB", MEMORY, "the trainer process's resident memory at the report, in GB"),
    Metric(VAL_TIME, "val s", TIMING, "seconds one validation took"),
)


@dataclass(frozen=True)
class Chart:
    """A monitor chart, one per question a user asks of an ORPO run (is it learning? is the
    preference separating? is it stable? is it fast?): train curves in ``train`` (first is
    drawn first), validation points in ``val``."""

    key: str
    title: str
    train: tuple[str, ...]
    val: tuple[str, ...] = ()


CHARTS = (
    Chart("loss", "loss / NLL", (LOSS, NLL_LOSS), (LOSS,)),
    Chart("odds", "log-odds", (LOG_ODDS_CHOSEN, LOG_ODDS_RATIO), (LOG_ODDS_CHOSEN,)),
    Chart("rewards", "rewards", (REWARDS_MARGINS, REWARDS_CHOSEN, REWARDS_REJECTED), (REWARDS_MARGINS,)),
    Chart("accuracy", "reward accuracy", (REWARDS_ACCURACIES,), (REWARDS_ACCURACIES,)),
    Chart("lr", "learning rate", (LEARNING_RATE,)),
    Chart("speed", "tokens/s", (TOKENS_PER_SECOND,)),
)

BY_NAME = {m.name: m for m in METRICS}
ORPO_METRICS = tuple(m.name for m in METRICS if m.kind == ORPO)
RATE_METRICS = tuple(m.name for m in METRICS if m.kind in (RATE, MEMORY))
TRAIN_METRICS = tuple(m.name for m in METRICS if "train" in m.events)
VAL_METRICS = tuple(m.name for m in METRICS if "val" in m.events)


def metric_label(name: str) -> str:
    """A metric's short label; an unregistered name is shown as it is."""
    metric = BY_NAME.get(name)
    return metric.label if metric else name
