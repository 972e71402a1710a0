"""What a run hands to an experiment tracker (TensorBoard, Trackio, W&B), decided once.

Both `orpo-tui export RUN --to ...` (a finished run, read back from its folder) and a live
run's `[report] to = [...]` (each event as the trainer writes it) turn metrics.jsonl events
into tracker rows here, so the two can never disagree:

- a ``train`` or ``val`` event becomes one :class:`Scalar` per number it carries, tagged
  ``<event>/<metric>`` (``train/loss``, ``val/rewards/accuracies``: the event names of
  metrics.jsonl, the metric names of trainer.pure.metrics, which are TRL's), at the event's
  step and wall time;
- a ``sample`` event becomes a :class:`Sample` (prompt and greedy completion as text);
- the run's config becomes flat hyperparameters: ``training.learning_rate = 0.001``, lists
  as their JSON text.

Which trackers exist and which pip extra installs each is named here too. The trackers'
libraries are driven by trainer.trackers (they load numpy, which this module must not).

Pure module: no mlx, no numpy, no textual.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from trainer.pure import metrics as M

__all__ = [
    "TENSORBOARD",
    "TRACKIO",
    "WANDB",
    "TRACKERS",
    "METRIC_EVENTS",
    "HPARAM_METRICS",
    "DEFAULT_PROJECT",
    "Scalar",
    "Sample",
    "scalars",
    "sample",
    "flat_hparams",
    "install_hint",
    "module_of",
]

TENSORBOARD, TRACKIO, WANDB = "tensorboard", "trackio", "wandb"
TRACKERS = (TENSORBOARD, TRACKIO, WANDB)

# The Python module each tracker is written through, and the pip extra that installs it
# (pyproject.toml's optional dependencies carry the same names).
_MODULES = {TENSORBOARD: "tensorboardX", TRACKIO: "trackio", WANDB: "wandb"}

# The events whose numbers are metrics; the others carry paths, text or states.
METRIC_EVENTS = ("train", "val")

# The columns of TensorBoard's hparams table beside the config: the run's latest value of each.
HPARAM_METRICS = tuple(f"val/{name}" for name in (M.LOSS, M.REWARDS_ACCURACIES, M.REWARDS_MARGINS))

# The trackio / W&B project a run goes to when the user names none.
DEFAULT_PROJECT = "orpo-tui"

_RESERVED = ("v", "event", "step", "time")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True)
class Scalar:
    tag: str
    value: float
    step: int
    wall_time: float


@dataclass(frozen=True)
class Sample:
    step: int
    index: int
    prompt: str
    completion: str
    wall_time: float

    @property
    def tag(self) -> str:
        return f"samples/{self.index}"

    def markdown(self) -> str:
        """Prompt and completion as one text, each in a block that keeps its line breaks."""
        return f"**prompt**\n\n```\n{self.prompt}\n```\n\n**completion** (greedy)\n\n```\n{self.completion}\n```"


def _number(value: Any) -> float | None:
    # The stream as written holds non-finite numbers as strings; as read back, as floats.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return None


def scalars(event: dict) -> list[Scalar]:
    """The tracker rows of one metrics.jsonl event: every number of a train or val event
    (in the order written), none for other events."""
    kind = event.get("event")
    if kind not in METRIC_EVENTS:
        return []
    step, wall_time = int(event["step"]), float(event["time"])
    rows = []
    for name, raw in event.items():
        value = None if name in _RESERVED else _number(raw)
        if value is not None:
            rows.append(Scalar(f"{kind}/{name}", value, step, wall_time))
    return rows


def sample(event: dict) -> Sample | None:
    """A sample event as text for a tracker, or None for other events."""
    if event.get("event") != "sample":
        return None
    return Sample(int(event["step"]), int(event.get("index", 0)), str(event.get("prompt", "")),
                  str(event.get("completion", "")), float(event["time"]))


def flat_hparams(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config dict as ``section.key`` hyperparameters; lists (and anything else that
    is not a bool, number or string) as JSON text, which every tracker takes."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


def module_of(tracker: str) -> str:
    """The Python module a tracker is written through."""
    return _MODULES[tracker]


def install_hint(tracker: str) -> str:
    """The one line that says how to get a tracker's library."""
    return f"{tracker} needs {module_of(tracker)}: pip install 'orpo-tui[{tracker}]'"
