"""Run `orpo-train preflight` in a subprocess and turn its JSON report into lines to show.

The app must never import mlx, mlx_lm or datasets (they take seconds to import and would
freeze the interface), so the trainer does the work in its own interpreter and this module
only reads the answer. Standard library only. `run_preflight` blocks: call it from a worker
thread, not from the event loop.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.pure.system_memory import REAL_LENGTHS, DeviceMemory, verdict
from trainer.pure.trainer_process import preflight_argv

__all__ = ["PreflightError", "PreflightReport", "Segment", "run_preflight", "format_report"]


class PreflightError(Exception):
    """The preflight could not produce a report (crash, timeout, garbled output): one line."""


@dataclass(frozen=True)
class Segment:
    """A run of first-row tokens sharing a role ("prompt", "chosen", "rejected") and
    whether the loss scores them."""

    text: str
    role: str
    scored: bool
    tokens: int


@dataclass(frozen=True)
class PreflightReport:
    """The trainer's report. Fields the trainer could not learn (because of `error`) are
    None; `raw` keeps the whole JSON object for anything not lifted into a field."""

    error: str | None
    warnings: tuple[str, ...]
    source: str | None
    format: str | None
    splits: Mapping[str, Any] | None
    columns: Mapping[str, Any] | None
    preference_score: Mapping[str, Any] | None
    max_seq_length: int | None
    over_max_seq_length: Mapping[str, Any] | None
    tokens: Mapping[str, Any] | None
    memory: Mapping[str, Any] | None  # peak memory at the data's real lengths (orpo-train estimate's keys)
    first_row_origin: str | None
    segments: tuple[Segment, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    # With a hostfile: one line per host problem, () when every host is ready; None without.
    hosts: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreflightReport:
        first = data.get("first_row") or {}
        return cls(
            error=data.get("error"),
            warnings=tuple(data.get("warnings") or ()),
            source=data.get("source"),
            format=data.get("format"),
            splits=data.get("splits"),
            columns=data.get("columns"),
            preference_score=data.get("preference_score"),
            max_seq_length=data.get("max_seq_length"),
            over_max_seq_length=data.get("over_max_seq_length"),
            tokens=data.get("tokens"),
            memory=data.get("memory"),
            first_row_origin=first.get("origin"),
            segments=tuple(
                Segment(str(s["text"]), str(s["role"]), bool(s["scored"]), int(s["tokens"]))
                for s in first.get("segments") or ()
            ),
            raw=data,
            hosts=None if data.get("hosts") is None else tuple(data["hosts"]),
        )


def preflight_command(preset_path: Path, overrides: Iterable[str] = ()) -> list[str]:
    """The argv the app runs; the interpreter running the app has the trainer installed."""
    return preflight_argv(preset_path, list(overrides))


def run_preflight(preset_path: Path, overrides: Iterable[str] = (), timeout: float = 120) -> PreflightReport:
    """Run the preflight and return its report.

    Bad data or a bad preset is not an exception: the report comes back with `error` set
    (the trainer exits 2 but still prints it). PreflightError means there is no report.
    """
    cmd = preflight_command(Path(preset_path), overrides)
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise PreflightError(f"preflight timed out after {timeout:g} s") from None
    except OSError as exc:
        raise PreflightError(f"preflight could not start: {exc.strerror or exc}") from None
    data = _last_json_object(proc.stdout)
    if data is None:
        why = _last_line(proc.stderr) or "no output"
        if proc.returncode == 0:
            raise PreflightError(f"preflight printed no JSON report: {why}")
        raise PreflightError(f"preflight failed (exit {proc.returncode}): {why}")
    return PreflightReport.from_dict(data)


def _last_json_object(stdout: str) -> dict | None:
    # The report is the last line; anything a library printed before it is ignored.
    for line in reversed(stdout.splitlines()):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------- plain lines


def format_report(report: PreflightReport) -> list[str]:
    """One fact per line, plain text; the app styles them."""
    lines: list[str] = []
    if report.error:
        lines.append(f"error: {report.error}")
    if report.hosts is not None:  # blockers of a run on several hosts: first, where they are seen
        lines.extend(f"host problem: {h}" for h in report.hosts)
        if not report.hosts:
            lines.append("hosts: every host of the hostfile is ready (ssh, python, mlx, model and data paths)")
    if report.source:
        kind = {
            "prompt": "prompt + answers",
            "flat": "flat (no prompt column)",
            "conversational": "conversational (chat messages, template applied)",
            "prompt+chat_template": "prompt + answers in the chat template",
        }.get(report.format or "")
        lines.append(f"source: {report.source}" + (f" · {kind}" if kind else ""))
    if report.splits:
        valid = f"valid: {report.splits['valid']} rows"
        if report.splits.get("valid_held_out"):
            valid += " (held out from train)"
        lines.append(f"train: {report.splits['train']} rows · {valid}")
    lines.extend(_column_lines(report.columns))
    if report.splits or report.preference_score:
        lines.append(_score_line(report))
    if report.tokens:
        lines.extend(_token_lines(report.tokens))
    if report.over_max_seq_length:
        shares = ", ".join(
            f"{name} {v['share']:.1%}" for name, v in report.over_max_seq_length.items()
        )
        lines.append(f"over max_seq_length {report.max_seq_length}: {shares}")
    if report.memory:
        lines.append(_memory_line(report.memory))
    if report.segments:
        lines.append(f"first row ({report.first_row_origin}):")
        for s in report.segments:
            how = "scored" if s.scored else "masked"
            lines.append(f"  {s.role} · {how} · {s.tokens} tokens: {_visible(s.text)}")
    lines.extend(f"warning: {w}" for w in report.warnings)
    return lines


def _memory_line(memory: Mapping[str, Any]) -> str:
    peak = memory["peak_memory_gb"] * 1e9
    if memory.get("device_memory_gb") is None:
        return "memory: " + verdict(peak, None, REAL_LENGTHS)
    device = DeviceMemory(memory["device_memory_gb"] * 1e9, str(memory.get("device_memory_source")))
    return "memory: " + verdict(peak, device, REAL_LENGTHS)


def _column_lines(columns: Mapping[str, Any] | None) -> list[str]:
    if not columns or columns.get("found") is None:
        return []
    found = columns["found"]
    used = [c for c in found if c not in columns.get("unused", ())]
    line = "columns: " + (", ".join(used) or "none of the expected ones")
    if columns.get("unused"):
        line += f" (extra ignored: {', '.join(columns['unused'])})"
    out = [line]
    if columns.get("missing"):
        out.append(f"missing columns: {', '.join(columns['missing'])} (found: {', '.join(found) or 'none'})")
    return out


def _score_line(report: PreflightReport) -> str:
    ps = report.preference_score
    if not ps:
        return "preference_score: none (every pair weighs 1.0)"
    line = f"preference_score: {ps['min']:.2f} … {ps['max']:.2f}, mean {ps['mean']:.2f}"
    if ps.get("outside_0_1"):
        line += f" ({ps['outside_0_1']} rows outside 0..1)"
    return line


def _token_lines(tokens: Mapping[str, Any]) -> list[str]:
    out = []
    for name, t in tokens.items():
        if t:
            out.append(
                f"tokens ({name}, average): prompt {t['prompt_mean']:g} · chosen {t['chosen_mean']:g}"
                f" · rejected {t['rejected_mean']:g} · longest pair {t['longest']}"
            )
    return out


def _visible(text: str) -> str:
    # One fact per line: the row's own line breaks and tabs are shown, not obeyed.
    return text.replace("\r", "\\r").replace("\n", "⏎").replace("\t", "→")
