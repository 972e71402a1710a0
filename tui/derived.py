"""Values implied by a config that the user would otherwise work out by hand: the LoRA
update scale, the effective batch, the epochs the iterations amount to. Pure and cheap,
recomputed on every keystroke in the form."""

from __future__ import annotations

from trainer.pure.config import Config
from trainer.pure.estimate import estimate, implied_epochs, model_shape
from trainer.pure.sources import SourceError, train_row_count


def count_train_rows(cfg: Config) -> int | None:
    """The train rows a run would see, counted the way the trainer finds them (any local
    split file, after holding out validation); None for a hub dataset, or when the data
    cannot be read: the data check then says why."""
    try:
        return train_row_count(cfg.data)
    except (SourceError, OSError):
        return None


def derived_values(cfg: Config, train_rows: int | None, counting: bool = False) -> list[tuple[str, str]]:
    """`counting`: the train rows of the current data settings are being counted (the
    count of earlier settings is not shown meanwhile)."""
    t, ft = cfg.training, cfg.finetune
    effective_batch = t.batch_size * t.grad_accumulation_steps
    out: list[tuple[str, str]] = []
    if ft.type in ("lora", "dora"):
        out.append(("LoRA update scale", f"×{ft.scale:g}  (PEFT alpha ≈ {ft.scale * ft.rank:g} at rank {ft.rank})"))
    else:
        out.append(("Fine-tune", "all weights" + (f" of the top {ft.num_layers} layers" if ft.num_layers > 0 else "")))
    out.append(("Effective batch", f"{effective_batch} pairs  ({t.batch_size} × {t.grad_accumulation_steps} accumulation)"))
    pairs_seen = t.iters * effective_batch
    if counting:
        out.append(("Implied epochs", f"… ({pairs_seen:,} pairs; counting the train rows of {cfg.data.path})"))
    elif train_rows:
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
                                      f"adapters+optimizer {_size(worst.optimizer)}, "
                                      f"activations {_size(worst.activations + worst.logits)})"))
        out.append(("Work per step", f"≈ {worst.flops_per_step / 1e9:,.1f} GFLOP at max_seq_length; "
                                      f"{worst.trainable:,} trainable of {shape.params:,} weights"))
    if t.steps_per_eval:
        out.append(("Validation", f"every {t.steps_per_eval} steps over {'all' if t.val_batches < 0 else t.val_batches} batches"))
    return out


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
