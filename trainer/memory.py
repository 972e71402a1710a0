"""Memory on the MLX side: the estimate at the data's real token lengths, the device's
memory, the fit check before training, and MLX's memory limits.

The pure model (trainer/pure/estimate.py) prices one micro-batch of a given shape; here the
shapes come from the run's own batches, collated exactly as training collates them
(`make_batches`, then the layout each batch takes), so the estimate is the largest batch the
run will really form, not a percentile: every batch comes up within an epoch, and the
peak MLX reports is the largest one seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from trainer import data as D
from trainer.layouts import BatchLayout
from trainer.pure.config import Config, replace_value
from trainer.pure.estimate import (
    ModelShape,
    Pass,
    StepShape,
    forward_bytes,
    model_shape,
    step_bytes,
    weight_bytes,
    worst_step,
)
from trainer.pure.system_memory import DEVICE_MEMORY_ENV, REAL_LENGTHS, DeviceMemory, fits, system_memory, verdict


class DoesNotFit(Exception):
    """The run's estimated peak exceeds the device's memory; one line with both numbers."""


def step_shape(batch: dict, gathered: bool) -> StepShape:
    """The work of a host batch (`BatchLayout.host_batch`) as the pure model counts it."""
    if "shared" in batch:
        prefix, _pads, _counts, r_inputs, _r_targets, r_index, *rest = batch["shared"]
        rows, width = prefix.shape
        chosen, rejected = batch["inputs"].shape[1], r_inputs.shape[1]
        passes = (Pass(rows, width, width, headed=len(rest) > 3), Pass(rows, chosen, width + chosen),
                  Pass(rows, rejected, width + rejected))
        # Chosen, rejected and (when the prefix holds scored tokens) prefix positions.
        projected = len(batch["gather"][0]) + len(r_index) + (len(rest[3]) if len(rest) > 3 else 0)
        return StepShape(passes, projected)
    rows, width = batch["inputs"].shape
    projected = len(batch["gather"][0]) if gathered else rows * width
    return StepShape((Pass(rows, width, width),), projected)


@dataclass(frozen=True)
class RunEstimate:
    """Peak bytes at the real batches and in the worst case, with what set the first."""

    peak_bytes: float
    worst_bytes: float
    longest: StepShape  # the train micro-batch that costs most
    batches: int  # train batches priced
    fused_attention: bool
    phase: str  # which part of the run sets the peak


def estimate_run(cfg: Config, shape: ModelShape, train_pairs: Sequence[D.Pair], valid_pairs: Sequence[D.Pair],
                 pad_id: int, fused_attention: bool | None = None, quantizing: bool = False) -> RunEstimate:
    """The peak over the run's train steps (each batch in the layout the trainer picks for
    a usual mlx-lm model: only scored positions projected, prompts run once per pair), the
    layout check (a plain forward of the first batch, every position projected) and the
    validation passes. `fused_attention` defaults to this machine's (Metal's). `quantizing`:
    the base is quantized on this first load, which holds the float weights beside the
    quantized ones."""
    fused = on_metal() if fused_attention is None else fused_attention
    t = cfg.training
    layout = BatchLayout(pad_id, gathered=True, sharing=True)
    train_index = D.make_batches(train_pairs, t.batch_size)
    shapes = [step_shape(layout.host_batch([train_pairs[i] for i in idx]), True) for idx in train_index]
    costs = [step_bytes(cfg, shape, s, fused) for s in shapes]
    worst_i = max(range(len(costs)), key=costs.__getitem__)
    phases = {"a train step": costs[worst_i]}
    first = D.collate([train_pairs[i] for i in train_index[0]], pad_id)
    phases["the layout check"] = forward_bytes(cfg, shape, step_shape(first, False))
    if valid_pairs and t.steps_per_eval:
        valid = D.make_batches(valid_pairs, t.batch_size)
        valid = valid if t.val_batches < 0 else valid[: t.val_batches]
        phases["validation"] = max(forward_bytes(cfg, shape, step_shape(layout.host_batch([valid_pairs[i] for i in idx]), True))
                                   for idx in valid)
    if quantizing:
        phases["quantizing the base (first run only)"] = shape.params * shape.dtype_bytes + weight_bytes(cfg, shape)
    phase = max(phases, key=phases.__getitem__)
    worst = step_bytes(cfg, shape, worst_step(cfg), fused)
    return RunEstimate(phases[phase], max(worst, phases[phase]), shapes[worst_i], len(shapes), fused, phase)


# ---------------------------------------------------------------------------- the device


def on_metal() -> bool:
    return mx.metal.is_available()


def device_memory() -> DeviceMemory | None:
    """What a run may use: the GPU's recommended working set on Metal (what MLX sizes its own
    limits by), else the RAM available now. ORPO_TRAIN_DEVICE_MEMORY_GB overrides both
    (a test hook: it simulates a smaller device)."""
    if on_metal() and not os.environ.get(DEVICE_MEMORY_ENV):
        size = mx.device_info().get("max_recommended_working_set_size")
        if size:
            return DeviceMemory(float(size), "Metal recommended working set")
    return system_memory()


def run_estimate(cfg: Config, model_path: Path, train_pairs: Sequence[D.Pair], valid_pairs: Sequence[D.Pair],
                 pad_id: int) -> RunEstimate | None:
    """The estimate for a run of `cfg` on the base in `model_path` (a local folder), or None
    when its config.json gives no shape the model knows."""
    from trainer.model import needs_quantizing

    shape = model_shape(str(model_path))
    if shape is None:
        return None
    return estimate_run(cfg, shape, train_pairs, valid_pairs, pad_id, quantizing=needs_quantizing(model_path, cfg))


def check_run(cfg: Config, model_path: Path, train_pairs: Sequence[D.Pair], valid_pairs: Sequence[D.Pair],
              pad_id: int, force: bool, ranks: int = 1, ranks_here: int = 1) -> str:
    """The fit verdict line for the log; raises DoesNotFit when the estimated peak exceeds
    the device's memory and `force` is not given. On `ranks` ranks each one holds the whole
    model and works on batch_size/ranks pairs of every batch; `ranks_here` of them share this
    machine's memory (all of them when our launcher started them here), so the device must
    hold that many rank peaks."""
    per_rank = cfg
    if ranks > 1:
        per_rank = replace_value(cfg, "training.batch_size", max(1, cfg.training.batch_size // ranks))
    est = run_estimate(per_rank, model_path, train_pairs, valid_pairs, pad_id)
    if est is None:
        return f"no estimate: {model_path}/config.json does not give the model's shape"
    peak = est.peak_bytes * ranks_here
    which = REAL_LENGTHS
    if ranks > 1:
        which = (f"for {ranks_here} rank(s) on this machine ({per_rank.training.batch_size} of "
                 f"{cfg.training.batch_size} pairs per batch each) {which}")
    device = device_memory()
    if device is None:
        return verdict(peak, None, which)
    line = verdict(peak, device, which)
    if not fits(peak, device):
        if not force:
            raise DoesNotFit(f"{line}; lower training.batch_size or data.max_seq_length, or pass --force to train anyway")
        line += " (--force: training anyway)"
    return line


def apply_limits(cfg: Config, log: Callable[[str], None]) -> None:
    """MLX's memory settings for the run, said in the log: on Metal the wired limit set to
    the recommended working set (as mlx-lm's trainer does, so the model's memory is not paged
    out under pressure), and training.memory_limit_gb / cache_limit_gb when set."""
    t = cfg.training
    said = []
    if on_metal():
        size = mx.device_info().get("max_recommended_working_set_size")
        if size:
            mx.set_wired_limit(int(size))
            said.append(f"wired limit {size / 1e9:.2f} GB (the recommended working set)")
    if t.memory_limit_gb:
        mx.set_memory_limit(int(t.memory_limit_gb * 1e9))
        said.append(f"memory limit {t.memory_limit_gb:g} GB")
    if t.cache_limit_gb >= 0:
        mx.set_cache_limit(int(t.cache_limit_gb * 1e9))
        said.append(f"cache limit {t.cache_limit_gb:g} GB")
    if not said:
        said.append(f"MLX's defaults (memory limit {mx.get_memory_limit() / 1e9:.2f} GB)")
    log("memory: " + ", ".join(said))
