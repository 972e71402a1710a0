"""`orpo-train fuse RUN_DIR [--best] [--quantize BITS] [--group-size N] [--out DIR]`: fold a
run's adapters into its base and write a standalone model folder that `mlx_lm.load` and
`mlx_lm.generate` use without adapters.

The same steps as mlx-lm's own fuse: load the base the run recorded (`model.resolved_path`,
the quantized copy for a quantized base) with the adapters, replace every LoRA/DoRA layer by
its `fuse()` (a quantized base stays quantized with the same bits), optionally re-quantize
the whole model, and save weights, config.json and tokenizer files with mlx_lm's `save`.
A full fine-tune's saved weights are simply loaded over the base. The folder is written
under a temporary name and renamed into place; an existing one is replaced.

Exit codes: 0 written (its path is the only stdout line), 2 bad input (one line on stderr),
1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import traceback
from pathlib import Path

from trainer.pure.config import ConfigError, load_preset
from trainer.pure.messages import describe
from trainer.pure.run_folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RunFolder
from trainer.pure.trainer_process import ExitCode

QUANTIZE_BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)


class FuseInputError(Exception):
    """Something the user can fix, as one line (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orpo-train fuse", description="Fuse a run's adapters into a standalone model folder.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--best", action="store_true", help="fuse the best adapters (RUN_DIR/adapters/best) instead of the latest")
    p.add_argument("--quantize", type=int, metavar="BITS", choices=QUANTIZE_BITS, help="quantize the fused model to BITS bits")
    p.add_argument("--group-size", type=int, default=64, choices=GROUP_SIZES, help="group size for --quantize (default 64)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/fused, or RUN_DIR/fused-best with --best)")
    return p


def adapter_folder(run_dir: Path, best: bool) -> Path:
    run = RunFolder(run_dir)
    folder = run.best if best else run.adapters
    if not (folder / ADAPTER_WEIGHTS).is_file() or not (folder / ADAPTER_CONFIG).is_file():
        where = folder.relative_to(run_dir)
        if best:
            raise FuseInputError(f"{run_dir}: no best adapters ({where}/) in this run; fuse without --best for the latest ones")
        raise FuseInputError(f"{run_dir}: no saved adapters yet ({where / ADAPTER_WEIGHTS})")
    return folder


def base_folder(run_dir: Path) -> Path:
    """The folder mlx_lm must load as the base: the run's recorded `model.resolved_path`."""
    config = RunFolder(run_dir).config
    if not config.is_file():
        raise FuseInputError(f"{run_dir}: not a run directory (no {config.name})")
    try:
        cfg = load_preset(config)
    except ConfigError as exc:
        raise FuseInputError(str(exc)) from None
    resolved = cfg.model.resolved_path
    if not resolved:
        raise FuseInputError(f"{config}: no model.resolved_path (the run never loaded its model)")
    if not (Path(resolved) / "config.json").is_file():
        raise FuseInputError(f"{config}: model.resolved_path {resolved} is gone; train or resume the run again to rebuild it")
    return Path(resolved)


def fuse_run(run_dir: Path, best: bool = False, quantize: int | None = None, group_size: int = 64, out: Path | None = None) -> Path:
    """Write the fused model folder and return it; raises FuseInputError for user errors."""
    run_dir = Path(run_dir)
    base = base_folder(run_dir)
    adapters = adapter_folder(run_dir, best)
    out = Path(out) if out else RunFolder(run_dir).fused(best)

    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, quantize_model, save

    try:
        model, tokenizer, config = load(str(base), adapter_path=str(adapters), return_config=True)
    except ValueError as exc:  # adapters that do not fit this base
        raise FuseInputError(f"{adapters}: {describe(exc)}") from None
    fused = [(name, module.fuse()) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if quantize:
        # Re-quantizing a quantized model would quantize its packed integers: start from floats.
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        with contextlib.redirect_stdout(io.StringIO()):
            model, config = quantize_model(model, config, group_size, quantize)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    with contextlib.redirect_stdout(io.StringIO()):
        save(staging, str(base), model, tokenizer, config, donate_model=False)
    if out.exists():
        shutil.rmtree(out)
    os.rename(staging, out)
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        out = fuse_run(Path(args.run_dir), args.best, args.quantize, args.group_size, Path(args.out) if args.out else None)
    except FuseInputError as exc:
        print(f"orpo-train fuse: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    except Exception as exc:
        traceback.print_exc()
        print(f"orpo-train fuse: {describe(exc)}", file=sys.stderr, flush=True)
        return ExitCode.ERROR
    print(out, flush=True)
    return ExitCode.OK
