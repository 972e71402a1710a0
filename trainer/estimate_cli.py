"""`orpo-train estimate`: the peak memory a run of a preset would reach, before running it.

    orpo-train estimate PRESET.toml [--set section.key=value ...] [--json]

Tokenizes the data with the model's tokenizer (and chat template) exactly as training does,
prices every batch the run will form (trainer/memory.py, on the model of
trainer/pure/estimate.py), and prints the peak at the data's real token lengths beside the
worst case at max_seq_length, with the device's memory and whether the run fits. Loads the
tokenizer, never the weights. `--json` prints one JSON object on one line (keys in README,
"orpo-train estimate"). Exit 0 with an estimate (fitting or not), 2 on a bad preset, data or
model (the reason on one line, or in the JSON's `error`), 1 on an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from trainer.pure.config import Config, ConfigError, apply_overrides, check, load_preset
from trainer.pure.messages import describe
from trainer.pure.system_memory import size_text, verdict
from trainer.pure.trainer_process import PROG, ExitCode

KEYS = ("peak_memory_gb", "peak_memory_gb_worst", "peak_set_by", "weights_gb", "optimizer_gb", "activations_gb",
        "trainable_params", "longest_batch", "train_batches", "batch_size", "max_seq_length", "attention",
        "device_memory_gb", "device_memory_source", "fits", "fits_worst", "error")


def estimate_report(cfg: Config) -> dict[str, Any]:
    """The JSON report; raises DataError/ModelError with one-line messages."""
    from trainer import data as D
    from trainer import memory
    from trainer.model import ModelError, load_tokenizer_for, resolve_model_path
    from trainer.pure.estimate import estimate, model_shape

    path = resolve_model_path(cfg.model.path)
    splits = D.load_splits(cfg.data, cfg.training.seed)
    tokenizer = load_tokenizer_for(path)
    train, _ = D.tokenize_rows(splits.train, tokenizer, cfg.data.max_seq_length)
    valid, _ = D.tokenize_rows(splits.valid, tokenizer, cfg.data.max_seq_length)
    run = memory.run_estimate(cfg, path, train, valid, D.pad_id(tokenizer))
    if run is None:
        raise ModelError(f"model.path: {path}: its config.json does not give the model's shape "
                         "(hidden_size, num_hidden_layers, vocab_size)")
    parts = estimate(cfg, model_shape(str(path)), run.longest, run.fused_attention)
    device = memory.device_memory()
    longest = run.longest
    return {
        "peak_memory_gb": run.peak_bytes / 1e9,
        "peak_memory_gb_worst": run.worst_bytes / 1e9,
        "peak_set_by": run.phase,
        "weights_gb": parts.weights / 1e9,
        "optimizer_gb": parts.optimizer / 1e9,
        "activations_gb": parts.activations / 1e9,
        "trainable_params": parts.trainable,
        "longest_batch": {"positions": longest.positions, "projected": longest.projected,
                          "passes": [[p.rows, p.length, p.context] for p in longest.passes]},
        "train_batches": run.batches,
        "batch_size": cfg.training.batch_size,
        "max_seq_length": cfg.data.max_seq_length,
        "attention": "fused (Metal)" if run.fused_attention else "unfused (CPU)",
        "device_memory_gb": device.bytes / 1e9 if device else None,
        "device_memory_source": device.what if device else None,
        "fits": run.peak_bytes <= device.bytes if device else None,
        "fits_worst": run.worst_bytes <= device.bytes if device else None,
        "error": None,
    }


def format_text(report: dict[str, Any], preset: str, cfg: Config) -> list[str]:
    from trainer.pure.system_memory import REAL_LENGTHS, WORST_CASE, DeviceMemory

    gb = 1e9
    b = report["longest_batch"]
    ft = cfg.finetune
    kind = ft.type if ft.type == "full" else f"{ft.type} rank {ft.rank}"
    bits = cfg.model.quantize.bits
    lines = [
        f"memory estimate for {preset}: {cfg.model.path}, {kind}{f', {bits}-bit base' if bits else ''}"
        f"{', QAT' if cfg.qat.enable else ''}, batch {report['batch_size']}, max_seq_length {report['max_seq_length']}",
        f"  peak at the data's real lengths: {size_text(report['peak_memory_gb'] * gb):>10}  (set by {report['peak_set_by']}; "
        f"costliest train batch of {report['train_batches']}: {b['positions']:,} positions, "
        f"{b['projected']:,} projected onto the vocabulary)",
        f"  worst case at max_seq_length:    {size_text(report['peak_memory_gb_worst'] * gb):>10}  "
        f"(every pair {report['max_seq_length']} tokens, every position projected)",
        f"  in the costliest train step: weights {size_text(report['weights_gb'] * gb)}, trainable weights, gradients "
        f"and optimizer {size_text(report['optimizer_gb'] * gb)} ({report['trainable_params']:,} trainable), "
        f"activations and logits {size_text(report['activations_gb'] * gb)}; attention {report['attention']}",
    ]
    if report["device_memory_gb"] is None:
        lines.append("  this machine's memory could not be read")
    else:
        device = DeviceMemory(report["device_memory_gb"] * gb, report["device_memory_source"])
        lines.append("  " + verdict(report["peak_memory_gb"] * gb, device, REAL_LENGTHS))
        lines.append("  " + verdict(report["peak_memory_gb_worst"] * gb, device, WORST_CASE))
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} estimate",
                                description="Estimate a preset's peak training memory at its data's real lengths.")
    p.add_argument("preset", help="preset TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def main(argv: Sequence[str]) -> int:
    from trainer.data import DataError
    from trainer.model import ModelError

    args = _parser().parse_args(list(argv))
    code, error = ExitCode.OK, None
    try:
        cfg = apply_overrides(load_preset(args.preset), args.overrides)
        check(cfg, args.preset)
        # Libraries that print would corrupt the one JSON line stdout must carry.
        with redirect_stdout(sys.stderr):
            report = estimate_report(cfg)
    except (ConfigError, DataError, ModelError) as exc:
        code, error = ExitCode.BAD_INPUT, str(exc)
    except Exception as exc:  # a bug, not bad input: traceback on stderr, one line out
        traceback.print_exc()
        code, error = ExitCode.ERROR, describe(exc)
    if error is not None:
        if args.json:
            print(json.dumps({**dict.fromkeys(KEYS), "error": error}), flush=True)
        print(f"{PROG}: {error}", file=sys.stderr, flush=True)
        return code
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print("\n".join(format_text(report, Path(args.preset).name, cfg)), flush=True)
    return code
