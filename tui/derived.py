"""Values implied by a config that the user would otherwise work out by hand: the LoRA
update scale, the effective batch, the epochs the iterations amount to. Pure and cheap,
recomputed on every keystroke in the form."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.pure.builtin_names import is_builtin
from trainer.pure.config import Config
from trainer.pure.estimate import estimate, implied_epochs, model_shape
from trainer.pure.messages import hub_offline
from trainer.pure.sources import SourceError, SourceKind, resolve_source, train_row_count
from trainer.pure.system_memory import REAL_LENGTHS, WORST_CASE, metal_here, size_text, system_memory, verdict


def count_train_rows(cfg: Config) -> int | None:
    """The train rows a run would see, counted the way the trainer finds them (any local
    split file, after holding out validation); None for a hub dataset, or when the data
    cannot be read: the data check then says why."""
    try:
        return train_row_count(cfg.data)
    except (SourceError, OSError):
        return None


def derived_values(cfg: Config, train_rows: int | None, counting: bool = False,
                   real_peak_gb: float | None = None) -> list[tuple[str, str]]:
    """`counting`: the train rows of the current data settings are being counted (the
    count of earlier settings is not shown meanwhile). `real_peak_gb`: the peak memory at
    the data's real lengths, from a data check of exactly this config."""
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
    device = system_memory()
    if real_peak_gb is not None:
        out.append(("Memory (est.)", f"≈ {size_text(real_peak_gb * 1e9)} at the data's real lengths (from the data check)"))
        out.append(("Fits?", verdict(real_peak_gb * 1e9, device, REAL_LENGTHS)))
    if shape is None:
        out.append(("Memory (worst)", "? (model shape unknown until its config.json is on disk)"))
    else:
        # The app runs where the trainer will: on an Apple-silicon Mac that is Metal, whose
        # fused attention keeps no score matrices.
        worst = estimate(cfg, shape, fused_attention=metal_here())
        out.append(("Memory (worst)", f"≈ {size_text(worst.total_bytes)} worst case at max_seq_length, every pair "
                                       f"{cfg.data.max_seq_length} tokens (weights {size_text(worst.weights)}, "
                                       f"adapters+optimizer {size_text(worst.optimizer)}, "
                                       f"activations {size_text(worst.activations)})"
                                       + ("" if real_peak_gb is not None else
                                          "; real lengths need less: Check data (ctrl+b) or orpo-train estimate")))
        if real_peak_gb is None:
            out.append(("Fits?", verdict(worst.total_bytes, device, WORST_CASE)))
        out.append(("Work per step", f"≈ {worst.flops_per_step / 1e9:,.1f} GFLOP at max_seq_length; "
                                      f"{worst.trainable:,} trainable of {shape.params:,} weights"))
    if t.steps_per_eval:
        out.append(("Validation", f"every {t.steps_per_eval} steps over {'all' if t.val_batches < 0 else t.val_batches} batches"))
    return out


# ---------------------------------------------------------------------------- hub ids


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def _hub_cached(kind: str, repo: str) -> bool:
    """Whether a hub repo has been downloaded here: its folder in the hub cache holds a
    snapshot (`kind` is "models" or "datasets"). Looks at files only, never the network."""
    snapshots = _hf_home() / "hub" / f"{kind}--{repo.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _datasets_cached(repo: str) -> bool:
    # The datasets library keeps what it prepared in its own cache, beside the hub's.
    cache = Path(os.environ.get("HF_DATASETS_CACHE") or _hf_home() / "datasets")
    return (cache / repo.replace("/", "___")).is_dir()


def _looks_like_hub_model(spec: str) -> bool:
    """The trainer's rule (`trainer.model.resolve_model_path`): not built in, not on disk,
    and `org/name` rather than a path."""
    return (not is_builtin(spec) and not Path(spec).expanduser().exists()
            and not spec.startswith((".", "/", "~")) and spec.count("/") == 1)


def hub_warnings(cfg: Config) -> list[tuple[str, str]]:
    """Hub ids a run would have to download first, with what to do where there is no
    network. Not errors: the preset is valid, and on a connected machine the run fetches
    them. Checked from the local cache only (the form cannot wait on the network)."""
    off = " (and HF_HUB_OFFLINE is set here)" if hub_offline() else ""
    out = []
    model = cfg.model.path
    if _looks_like_hub_model(model) and not _hub_cached("models", model):
        out.append(("model.path", f"hub model '{model}' is not in the local Hugging Face cache "
                                  f"({_hf_home() / 'hub'}): a run downloads it first, which needs network{off}. "
                                  f"Without network: download it where there is (huggingface-cli download {model}) "
                                  "into this cache, or point model.path at a local model folder"))
    try:
        source = resolve_source(cfg.data.path)
    except SourceError:
        source = None  # the data check reports a missing local path
    data = cfg.data.path
    if source is not None and source.kind is SourceKind.HUB and not (_hub_cached("datasets", data) or _datasets_cached(data)):
        out.append(("data.path", f"hub dataset '{data}' is not in the local Hugging Face cache "
                                 f"({_hf_home()}): a run downloads it first, which needs network{off}. "
                                 f"Without network: download it where there is (huggingface-cli download {data} "
                                 "--repo-type dataset) into this cache, or point data.path at a local folder or file"))
    return out
