"""Values implied by a config that the user would otherwise work out by hand: the LoRA
update scale, the effective batch, the epochs the iterations amount to. Pure and cheap,
recomputed on every keystroke in the form."""

from __future__ import annotations

from pathlib import Path

from trainer.builtin import DEMO_DATA_DIR
from trainer.pure.config import Config
from trainer.pure.estimate import estimate, implied_epochs, model_shape


def count_train_rows(cfg: Config) -> int | None:
    """Train rows of a local JSONL source by counting lines (no parsing); None when only a
    preflight can tell (hub datasets, Parquet, JSON arrays)."""
    d = cfg.data
    path = DEMO_DATA_DIR if d.path == "builtin:demo" else Path(d.path).expanduser()
    try:
        if path.is_dir():
            f = path / f"{d.train_split}.jsonl"
            return _count_lines(f) if f.is_file() else None
        if path.is_file() and path.suffix == ".jsonl":
            rows = _count_lines(path)
            return rows - max(1, round(rows * d.valid_fraction)) if d.valid_fraction > 0 else rows
    except OSError:
        return None
    return None


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def derived_values(cfg: Config, train_rows: int | None) -> list[tuple[str, str]]:
    t, ft = cfg.training, cfg.finetune
    effective_batch = t.batch_size * t.grad_accumulation_steps
    out: list[tuple[str, str]] = []
    if ft.type in ("lora", "dora"):
        out.append(("LoRA update scale", f"×{ft.scale:g}  (PEFT alpha ≈ {ft.scale * ft.rank:g} at rank {ft.rank})"))
    else:
        out.append(("Fine-tune", "all weights" + (f" of the top {ft.num_layers} layers" if ft.num_layers > 0 else "")))
    out.append(("Effective batch", f"{effective_batch} pairs  ({t.batch_size} × {t.grad_accumulation_steps} accumulation)"))
    pairs_seen = t.iters * effective_batch
    if train_rows:
        out.append(("Implied epochs", f"{implied_epochs(cfg, train_rows):.2f}  ({pairs_seen:,} pairs over {train_rows:,} train rows)"))
    else:
        out.append(("Implied epochs", f"? ({pairs_seen:,} pairs; run the data check to count rows)"))
    out.append(("Tokens per step", f"≤ {effective_batch * 2 * cfg.data.max_seq_length:,}  (chosen + rejected at max_seq_length)"))
    bits = cfg.model.quantize.bits
    out.append(("Base weights", f"{bits}-bit, group {cfg.model.quantize.group_size}" if bits else "as stored"))
    if cfg.qat.enable:
        out.append(("QAT", f"fake-quantize to {cfg.qat.bits}-bit (group {cfg.qat.group_size}) from step {cfg.qat.start_step}"))
    shape = model_shape(cfg.model.path)
    if shape is None:
        out.append(("Memory (est.)", "? (model shape unknown until its config.json is on disk)"))
    else:
        worst = estimate(cfg, shape)
        out.append(("Memory (est.)", f"≈ {_size(worst.total_bytes)} at max_seq_length  (weights {_size(worst.weights)}, "
                                      f"adapters+optimizer {_size(worst.optimizer)}, activations {_size(worst.activations + worst.logits)})"))
        out.append(("Work per step", f"≈ {worst.flops_per_step / 1e9:,.1f} GFLOP at max_seq_length; "
                                      f"{worst.trainable:,} trainable of {shape.params:,} weights"))
    if t.steps_per_eval:
        out.append(("Validation", f"every {t.steps_per_eval} steps over {'all' if t.val_batches < 0 else t.val_batches} batches"))
    return out


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
