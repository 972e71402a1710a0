"""What a run keeps on disk besides its reports: resumable checkpoints (the last
CHECKPOINTS_KEPT), the adapters of the best validation loss with the early-stopping count
that goes with them, and the summary a finished or stopped run leaves.

A stopped or killed run resumes exactly from its newest complete checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from trainer.model import publish_adapters, trainable_weights
from trainer.pure.events import read_events
from trainer.pure.run_folder import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BEST_WEIGHTS_IN_CHECKPOINT,
    CHECKPOINT_STATE,
    OPTIMIZER_STATE,
    RunFolder,
    checkpoint_step,
)
from trainer.pure.runs import atomic_write_text

CHECKPOINTS_KEPT = 2


class SaveError(Exception):
    """Weights could not be written (a full disk, a folder made read-only); one line."""


def _why(exc: BaseException, folder: Path) -> str:
    # MLX reports a failed write as "[write] Unable to write N bytes to file": say why.
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return f"the disk is full ({free:,} bytes free in {folder})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or folder}: {exc.strerror}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: optim.Optimizer, extra: dict,
                    before_rename: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint into a temporary folder and rename it into place: a SIGKILL at any
    moment leaves either the previous checkpoint or the new one, never a torn one."""
    run = RunFolder(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    final = run.checkpoint(step)
    tmp = run.checkpoint_tmp(step, os.getpid())
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        mx.save_safetensors(str(tmp / ADAPTER_WEIGHTS), trainable_weights(model))
        mx.save_safetensors(str(tmp / OPTIMIZER_STATE), dict(tree_flatten(optimizer.state)))
        state = {"step": step, **extra}
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(state, indent=2) + "\n")
        if before_rename is not None:
            before_rename(tmp)
        if final.exists():  # re-saving the same step (stop right after a periodic save)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # frees what the failed save took
        last = run.latest_checkpoint()
        raise SaveError(f"step {step}: could not save a checkpoint: {_why(exc, run.checkpoints)}; "
                        f"the last complete checkpoint is {last.name if last else 'none'}") from None
    _drop_old_checkpoints(run)
    return final


def _drop_old_checkpoints(run: RunFolder) -> None:
    saved = sorted((p for p in run.checkpoints.iterdir() if checkpoint_step(p) is not None), key=checkpoint_step)
    for old in saved[:-CHECKPOINTS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(ckpt: Path, model: nn.Module, optimizer: optim.Optimizer) -> dict:
    model.load_weights(list(mx.load(str(ckpt / ADAPTER_WEIGHTS)).items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(ckpt / OPTIMIZER_STATE)).items()))
    return json.loads((ckpt / CHECKPOINT_STATE).read_text())


# ---------------------------------------------------------------------------- best and early stop


@dataclass
class BestTracker:
    """The early-stopping bookkeeping: the best validation loss so far, its step, and how many
    evaluations since then brought no new best. NaN is never a best. Saved in each
    checkpoint's state, so a resumed run continues the same count."""

    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Record one evaluation; True when `loss` is a new best."""
        if math.isfinite(loss) and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_val_loss, self.best_step, self.evals_without_improvement = loss, step, 0
            return True
        self.evals_without_improvement += 1
        return False

    def should_stop(self, patience: int) -> bool:
        return patience > 0 and self.evals_without_improvement >= patience

    def to_state(self) -> dict:
        return {"best_val_loss": self.best_val_loss, "best_step": self.best_step,
                "evals_without_improvement": self.evals_without_improvement}

    @classmethod
    def from_state(cls, state: dict) -> BestTracker:
        loss = state.get("best_val_loss")
        return cls(None if loss is None else float(loss), state.get("best_step"), int(state.get("evals_without_improvement", 0)))


def save_best(run_dir: Path, model: nn.Module, acfg: dict) -> Path:
    """The current adapters as the best ones, in mlx-lm's layout; each file replaced atomically."""
    folder = RunFolder(run_dir).best
    tmp = folder / ".adapters.tmp.safetensors"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(tmp), trainable_weights(model))
        os.replace(tmp, folder / ADAPTER_WEIGHTS)
        atomic_write_text(folder / ADAPTER_CONFIG, json.dumps(acfg, indent=2) + "\n")
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise SaveError(f"could not save the best adapters: {_why(exc, folder.parent)}") from None
    return folder


def keep_best_in_checkpoint(run_dir: Path, ckpt_tmp: Path) -> None:
    """Snapshot the best adapters into a checkpoint being written, so a resume from it puts
    back the best of *its* past, not one found in work the crash lost. A copy, not a hard
    link: anything writing into the best folder in place would change the checkpoint too."""
    src = RunFolder(run_dir).best_weights
    if src.is_file():
        shutil.copyfile(src, ckpt_tmp / BEST_WEIGHTS_IN_CHECKPOINT)


def restore_best(run_dir: Path, ckpt: Path, tracker: BestTracker, acfg: dict) -> None:
    """On resume: the best folder as it was at the checkpoint (or gone, when no best was kept then)."""
    saved = ckpt / BEST_WEIGHTS_IN_CHECKPOINT
    folder = RunFolder(run_dir).best
    if saved.is_file() and tracker.best_step is not None:
        publish_adapters(folder, saved, acfg)
    elif folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- summary


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become "nan"/"inf"/"-inf", as in the metrics stream."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_summary(run_dir: Path, **values: Any) -> Path:
    """The run's summary, atomically: what a finished (or stopped) run came to."""
    run = RunFolder(run_dir)
    events = read_events(run.metrics)
    last = {kind: next((e for e in reversed(events) if e.get("event") == kind), None) for kind in ("train", "val")}
    strip = lambda e: None if e is None else {k: v for k, v in e.items() if k not in ("v", "event", "time")}  # noqa: E731
    inside = lambda path: str(path.relative_to(run.root))  # noqa: E731
    ckpt = run.latest_checkpoint()
    summary = {
        **values,
        "final_train": strip(last["train"]),
        "final_val": strip(last["val"]),
        "checkpoints": {
            "latest_adapters": inside(run.adapters) if run.adapter_weights.is_file() else None,
            "best_adapters": inside(run.best) if run.best_weights.is_file() else None,
            "last_resumable": inside(ckpt) if ckpt else None,
        },
    }
    atomic_write_text(run.summary, json.dumps(_finite(summary), indent=2, allow_nan=False, default=str) + "\n")
    return run.summary
