"""Comparing runs and presets: a config diff, per-run summaries, and CSV exports.

Everything here reads files and returns values or text; the CLI (`orpo-tui diff`,
`export`, `summary`) and a future compare screen share it. No textual import: the CLI
subcommands must start fast and the functions must be testable without an app.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.pure import metrics as M
from trainer.pure.config import Config, ConfigError, get_value, iter_fields, load_preset
from trainer.pure.events import read_events
from trainer.pure.queue import read as read_queue
from trainer.pure.rank_status import world_size
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import effective_state, read_status, run_label
from trainer.pure.states import ACTIVE
from tui.derived import count_train_rows
from tui.fit import clip

__all__ = [
    "CompareError",
    "Side",
    "DiffRow",
    "load_side",
    "check_run_dir",
    "config_diff",
    "differing_keys",
    "format_diff",
    "summarize",
    "preset_of",
    "summarize_paths",
    "format_summaries",
    "summaries_to_csv",
    "metrics_to_csv",
]

# Written by the trainer for its own use; it differs between any two machines and says
# nothing about the experiment, so a diff would only be noise.
_SKIPPED_KEYS = frozenset({"model.resolved_path"})
_DERIVED = "derived."
_BOLD_YELLOW, _RESET = "\x1b[1;33m", "\x1b[0m"


class CompareError(Exception):
    """A path that cannot be compared, as one printable line."""


# --------------------------------------------------------------------------
# Sides: what is being compared
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a run directory (its frozen config.toml) or a preset."""

    label: str
    path: Path
    config: Config
    is_run: bool


def load_side(path: Path) -> Side:
    """A run directory or a `.toml` preset, loaded and checked."""
    path = Path(path)
    if path.is_dir():
        config_file = RunFolder(path).config
        if not config_file.is_file():
            raise CompareError(f"{path}: not a run directory (no {config_file.name})")
        return Side(path.name, path, _load_config(config_file), is_run=True)
    if path.is_file():
        if path.suffix != ".toml":
            raise CompareError(f"{path}: not a run directory or a preset (.toml) file")
        return Side(path.stem, path, _load_config(path), is_run=False)
    raise CompareError(f"{path}: no such run directory or preset file")


def _load_config(path: Path) -> Config:
    try:
        return load_preset(path)
    except ConfigError as exc:  # already one line naming the file
        raise CompareError(str(exc)) from None


def check_run_dir(path: Path) -> Path:
    """`path` if it looks like a run directory (any of the files a run writes), else a
    CompareError: summaries and exports of an arbitrary folder would be silently empty."""
    path = Path(path)
    if not path.is_dir():
        raise CompareError(f"{path}: {'not a run directory' if path.exists() else 'no such run directory'}")
    run = RunFolder(path)
    if not any(p.is_file() for p in (run.config, run.status, run.metrics)):
        raise CompareError(f"{path}: not a run directory (no {run.config.name}, {run.status.name} or {run.metrics.name})")
    return path


# --------------------------------------------------------------------------
# Config diff
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffRow:
    """One key of the diff with both values as display text."""

    key: str
    a: str
    b: str
    changed: bool
    derived: bool


def display_value(value: Any) -> str:
    """A config value as short display text. Floats use repr, the shortest text that
    reads back as the same float, so two different values never look equal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "[]"
    if isinstance(value, str):
        return value if value else '""'  # an empty string would read as a missing cell
    return repr(value)


def derived_fields(cfg: Config) -> dict[str, str]:
    """The values a setting implies, keyed `derived.*`: they change when any of several
    settings change, which a diff of the raw keys leaves the reader to work out."""
    ft, t = cfg.finetune, cfg.training
    adapters = ft.type in ("lora", "dora")
    effective_batch = t.batch_size * t.grad_accumulation_steps
    return {
        # mlx-lm multiplies the adapter output by `scale`; PEFT's alpha is scale × rank.
        "derived.lora_scale": display_value(ft.scale) if adapters else "n/a (full)",
        "derived.peft_alpha": display_value(ft.scale * ft.rank) if adapters else "n/a (full)",
        "derived.effective_batch": str(effective_batch),
        "derived.implied_epochs": _implied_epochs(cfg, t.iters * effective_batch),
        "derived.base_bits": str(cfg.model.quantize.bits) if cfg.model.quantize.bits else "off",
        "derived.qat_bits": str(cfg.qat.bits) if cfg.qat.enable else "off",
    }


def _implied_epochs(cfg: Config, pairs_seen: int) -> str:
    rows = count_train_rows(cfg)
    return f"{pairs_seen / rows:.2f}" if rows else "?"


def config_diff(a: Side, b: Side, only_changed: bool = False) -> list[DiffRow]:
    """Every leaf setting, then the derived values; with `only_changed` just the rows
    whose values differ."""
    rows = [_setting_row(spec.path, a.config, b.config) for spec in iter_fields() if spec.path not in _SKIPPED_KEYS]
    da, db = derived_fields(a.config), derived_fields(b.config)
    rows += [DiffRow(key, da[key], db[key], da[key] != db[key], derived=True) for key in da]
    return [r for r in rows if r.changed] if only_changed else rows


def differing_keys(configs: list[Config], skip: Iterable[str] = ()) -> list[str]:
    """The settings (not derived values, which read data files) whose values are not the
    same in all `configs`, in schema order: what tells a set of runs apart."""
    skipped = _SKIPPED_KEYS | set(skip)
    if len(configs) < 2:
        return []
    first, rest = configs[0], configs[1:]
    return [spec.path for spec in iter_fields() if spec.path not in skipped
            and any(_setting_row(spec.path, first, other).changed for other in rest)]


def _setting_row(key: str, a: Config, b: Config) -> DiffRow:
    va, vb = get_value(a, key), get_value(b, key)
    # Raw values decide "changed", so 1 and 1.0 in a float field count as equal.
    return DiffRow(key, display_value(va), display_value(vb), va != vb, derived=False)


def format_diff(rows: list[DiffRow], label_a: str, label_b: str, color: bool, width: int = 100) -> str:
    """A side-by-side table `key | A | B` fitted to `width` columns. Changed rows start
    with `*` (and are bold yellow when `color`); the last line counts them."""
    key_w = min(max([len("key")] + [len(r.key) for r in rows]), 40)
    # "* " marker, then key, then two " | " separators.
    value_w = max(8, (width - 2 - key_w - 6) // 2)

    def line(mark: str, key: str, a: str, b: str) -> str:
        cells = (_fit(key, key_w), _fit(a, value_w), _fit(b, value_w))
        return f"{mark} {cells[0]} | {cells[1]} | {cells[2]}".rstrip()

    out = [line(" ", "key", label_a, label_b), "-" * (2 + key_w + 2 * (3 + value_w))]
    for r in rows:
        text = line("*" if r.changed else " ", r.key, r.a, r.b)
        out.append(f"{_BOLD_YELLOW}{text}{_RESET}" if color and r.changed else text)
    out.append(_count_line(rows))
    return "\n".join(out)


def _fit(text: str, width: int) -> str:
    return clip(text, width).ljust(width)


def _count_line(rows: Iterable[DiffRow]) -> str:
    # Counts every changed row shown, derived ones included, and says how many of those
    # are derived so the number can be matched against the settings that were edited.
    changed = [r for r in rows if r.changed]
    derived = sum(r.derived for r in changed)
    noun = "key differs" if len(changed) == 1 else "keys differ"
    return f"{len(changed)} {noun} ({derived} derived)"


# --------------------------------------------------------------------------
# Run summaries
# --------------------------------------------------------------------------


def summarize(run_dir: Path, now: float | None = None) -> dict:
    """The headline numbers of one run; a value the files do not hold is None."""
    run_dir = Path(run_dir)
    status = read_status(run_dir) or {}
    state = effective_state(status or None)
    every_event = read_events(RunFolder(run_dir).metrics)
    events = _current_attempt(every_event)
    train = [e for e in events if e.get("event") == "train"]
    val = [e for e in events if e.get("event") == "val"]
    last_val = val[-1] if val else {}
    best = _best_val(val)
    return {
        "run": run_dir.name,
        "preset": preset_of(run_dir),
        "state": state,
        "steps": _steps(status, train),
        "world_size": world_size(status),  # the ranks of its latest start (null: not recorded)
        "final_val_loss": _number(last_val.get(M.LOSS)),
        "best_val_loss": best[0],
        "best_val_step": best[1],
        "final_val_accuracy": _number(last_val.get(M.REWARDS_ACCURACIES)),
        "final_val_margin": _number(last_val.get(M.REWARDS_MARGINS)),
        "final_val_log_odds_chosen": _number(last_val.get(M.LOG_ODDS_CHOSEN)),
        "mean_pairs_per_second": _mean(_finite(e.get(M.PAIRS_PER_SECOND) for e in train)),
        "max_peak_memory_gb": max(_finite(e.get(M.PEAK_MEMORY_GB) for e in train), default=None),
        "duration_s": _duration(status, state, every_event, _read_summary(run_dir),
                                time.time() if now is None else now),
    }


def _current_attempt(events: list[dict]) -> list[dict]:
    """Events of the attempt the checkpoints continue. A resumed run reports again the
    steps after its last checkpoint; as in tui.series, the newer report replaces what
    the older attempt logged from that step on, per event kind."""
    kept: list[dict] = []
    last: dict[Any, int] = {}
    for e in events:
        kind, step = e.get("event"), e.get("step")
        if isinstance(step, int):
            if kind in last and step <= last[kind]:
                kept = [k for k in kept if k.get("event") != kind or _before(k, step)]
            last[kind] = step
        kept.append(e)
    return kept


def _before(event: dict, step: int) -> bool:
    return isinstance(event.get("step"), int) and event["step"] < step


def _steps(status: dict, train: list[dict]) -> int | None:
    # status.json is the trainer's own count; without it, the last reported step.
    step = status.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    return train[-1].get("step") if train else None


def _best_val(val: list[dict]) -> tuple[float | None, int | None]:
    # A NaN loss is never "best"; the earliest step wins a tie.
    scored = [(e[M.LOSS], e.get("step")) for e in val if _is_finite(e.get(M.LOSS))]
    if not scored:
        return None, None
    loss, step = min(scored, key=lambda pair: pair[0])
    return float(loss), step


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float | None:
    # The final value is reported as is, NaN included: a diverged run must look diverged.
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if _is_finite(v)]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _duration(status: dict, state: str, events: list[dict], summary: dict, now: float) -> float | None:
    """The time the run spent training, over all its attempts: a run stopped on Friday and
    resumed on Monday trained for its two attempts, not for the weekend between them."""
    started = status.get("started_at")
    if not _is_finite(started):
        return None
    wall = summary.get("wall_time_s")
    # The trainer's own clock, when summary.json is from the end the status records (a
    # later attempt that crashed leaves an older summary behind).
    if (state not in ACTIVE and _is_finite(wall) and summary.get("state") == state
            and summary.get("steps_done") == status.get("step")):
        return float(wall)
    # Else from the events: each attempt runs from its start (the status event a resumed
    # trainer writes) to its last event; a live run's last attempt runs until now.
    attempts: list[list[float]] = [[float(started)]]
    for e in events:
        t = e.get("time")
        if not _is_finite(t):
            continue
        if e.get("event") == "status" and e.get("resumed") is True:
            attempts.append([float(t)])
        else:
            attempts[-1].append(float(t))
    ended = status.get("ended_at")
    if state in ACTIVE:
        attempts[-1].append(now)
    elif _is_finite(ended):
        attempts[-1].append(float(ended))
    return sum(max(0.0, max(a) - a[0]) for a in attempts)


def _read_summary(run_dir: Path) -> dict:
    try:
        data = json.loads(RunFolder(run_dir).summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def preset_of(run_dir: Path) -> str:
    """The preset a run was trained from. A sweep run's folder is named after its sweep
    point (`<stamp>-beta-0.1-rank-8`), which the folder name alone cannot tell from a
    preset and a collision suffix: the sweep queue records its preset file. Else the name
    the run was given (`output.name` in its config), else the label in its folder name."""
    run_dir = Path(run_dir)
    try:
        items = read_queue(run_dir.parent).get("items", [])
    except (OSError, ValueError):
        items = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("run_dir") and item.get("preset"):
            if Path(str(item["run_dir"])).name == run_dir.name:
                return Path(str(item["preset"])).stem
    try:
        name = load_preset(RunFolder(run_dir).config).output.name
    except (ConfigError, OSError):
        name = ""
    return name or run_label(run_dir.name)


def summarize_paths(paths: Iterable[Path]) -> tuple[list[dict], list[str]]:
    """Summaries of the run folders among `paths`, and one line for each path skipped (a
    CSV export, queue.json, any folder that is not a run): `summary runs/*` summarizes
    the runs whatever else lies beside them. No run at all is a CompareError."""
    rows, skipped = [], []
    for path in paths:
        try:
            rows.append(summarize(check_run_dir(Path(path))))
        except CompareError as exc:
            skipped.append(f"{exc}; skipped")
    if not rows:
        raise CompareError(skipped[0].removesuffix("; skipped") if len(skipped) == 1 else
                           f"none of the {len(skipped)} paths is a run directory")
    return rows, skipped


def format_summaries(rows: list[dict]) -> str:
    """Summaries as a plain table, one line per field and one column per run, so that
    several runs fit a terminal's width and read side by side."""
    if not rows:
        return ""
    fields = _columns(rows)
    cells = [[_summary_cell(field, row.get(field)) for row in rows] for field in fields]
    widths = [max(len(c[i]) for c in cells) for i in range(len(rows))]
    name_w = max(map(len, fields))
    lines = []
    for field, values in zip(fields, cells):
        text = "  ".join(v.ljust(w) for v, w in zip(values, widths))
        lines.append(f"{field.ljust(name_w)}  {text}".rstrip())
    return "\n".join(lines)


def _summary_cell(field: str, value: Any) -> str:
    if value is None:
        return "-"
    if field == "duration_s" and isinstance(value, (int, float)):
        return _hms(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------


def summaries_to_csv(rows: list[dict]) -> str:
    """Summaries as CSV with a header; None is an empty cell."""
    return _csv(_columns(rows), rows)


def metrics_to_csv(run_dir: Path) -> str:
    """One CSV row per train/val event: event, step, time, then every metric any of
    them carries (a column an event lacks is empty; NaN is written as `nan`)."""
    events = [e for e in read_events(RunFolder(run_dir).metrics) if e.get("event") in ("train", "val")]
    rows = [{k: v for k, v in e.items() if k != "v"} for e in events]
    return _csv(_columns([{"event": None, "step": None, "time": None}] + rows), rows)


def _columns(rows: list[dict]) -> list[str]:
    # First-seen order: dicts keep insertion order, so this is a stable union.
    return list(dict.fromkeys(key for row in rows for key in row))


def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip text; nan, inf and -inf as such
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
