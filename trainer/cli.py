"""`orpo-train`: train a preset into a new run directory, or resume one.

    orpo-train PRESET.toml [--runs-dir DIR] [--set section.key=value ...]
    orpo-train --resume RUN_DIR [--set training.iters=N ...]
    orpo-train preflight PRESET.toml [--set ...]   (a JSON report on the data; see preflight.py)
    orpo-train fuse RUN_DIR [--best] [--quantize BITS] [--out DIR]   (a standalone model; see fuse.py)
    orpo-train import-yaml FILE.yaml [--out PRESET.toml]   (from an mlx-lm-lora config; see interop.py)
    orpo-train export-yaml PRESET.toml [--out FILE.yaml]   (to an mlx-lm-lora config)

The first line on stdout is the run directory. Exit codes: 0 finished, 130 stopped by the
user, 2 bad config or data (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from pathlib import Path

from trainer.config import ConfigError, apply_overrides, check, dump_toml, load_preset, replace_value
from trainer.messages import describe
from trainer.runs import ACTIVE_STATES, create_run_dir, pid_alive, read_status, write_status

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 130

# Changing these on resume only moves the finish line or the reporting rhythm; anything else
# would make the resumed run a different experiment from the one its metrics describe.
RESUME_SETTABLE = (
    "training.iters",
    "training.steps_per_report",
    "training.steps_per_eval",
    "training.val_batches",
    "training.save_every",
    "training.patience",
    "training.sample_prompts",
    "training.sample_max_tokens",
)


class BadInput(Exception):
    """A usage problem reported as one line with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orpo-train", description="ORPO fine-tuning on MLX.")
    p.add_argument("preset", nargs="?", help="preset TOML file to train")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or crashed run")
    p.add_argument("--runs-dir", metavar="DIR", help="where run folders go (default: output.runs_dir)")
    p.add_argument("--log-only", action="store_true", help="after the run directory line, send all output to its train.log (for launchers such as orpo-tui)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a preset value, e.g. --set training.iters=50 (repeatable)")
    return p


def _fail_line(message: str) -> int:
    print(f"orpo-train: {message}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def _install_stop_handlers(stop, run_dir: Path) -> None:
    """First SIGINT/SIGTERM: finish the step, save, exit 130. A second one: stop at once
    (the last checkpoint stays valid). SIGHUP is ignored so a dropped SSH link does not end
    a run started from a bare shell."""

    def handler(signum, _frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.request(signal.Signals(signum).name)
        # Visible at once to anyone watching the run, before the current step ends.
        if (read_status(run_dir) or {}).get("state") == "running":
            write_status(run_dir, state="stopping")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _new_run(args):
    cfg = load_preset(args.preset)
    cfg = apply_overrides(cfg, args.overrides)
    check(cfg, args.preset)
    runs_dir = Path(args.runs_dir or cfg.output.runs_dir).expanduser()
    label = cfg.output.name or Path(args.preset).stem
    run_dir = create_run_dir(runs_dir, label)
    return cfg, run_dir, None


def _resume_run(args):
    from trainer.loop import latest_checkpoint

    run_dir = Path(args.resume)
    if not (run_dir / "config.toml").is_file():
        raise BadInput(f"{run_dir}: not a run directory (no config.toml)")
    cfg = load_preset(run_dir / "config.toml")
    for item in args.overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUME_SETTABLE:
            raise BadInput(f"--set {key}: cannot be changed on resume (allowed: {', '.join(RESUME_SETTABLE)})")
    cfg = apply_overrides(cfg, args.overrides)
    check(cfg, str(run_dir / "config.toml"))
    status = read_status(run_dir) or {}
    if status.get("state") in ACTIVE_STATES and pid_alive(status.get("pid") or -1):
        raise BadInput(f"{run_dir}: still running (pid {status['pid']})")
    ckpt = latest_checkpoint(run_dir)
    done = int(ckpt.name.split("-")[1]) if ckpt else 0
    if done >= cfg.training.iters:
        raise BadInput(f"{run_dir}: already at step {done} of {cfg.training.iters}; extend it with --set training.iters=N")
    return cfg, run_dir, ckpt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["preflight"]:
        from trainer.preflight import main as preflight_main  # loads mlx: only when asked

        return preflight_main(argv[1:])
    if argv[:1] in (["import-yaml"], ["export-yaml"]):
        from trainer.interop import main as interop_main

        return interop_main(argv)
    if argv[:1] == ["fuse"]:
        from trainer.fuse import main as fuse_main  # loads mlx: only when asked

        return fuse_main(argv[1:])
    args = _parser().parse_args(argv)
    if bool(args.preset) == bool(args.resume):
        return _fail_line("give either a PRESET file or --resume RUN_DIR")
    try:
        cfg, run_dir, ckpt = _resume_run(args) if args.resume else _new_run(args)
    except (ConfigError, BadInput) as exc:
        return _fail_line(str(exc))
    print(run_dir, flush=True)
    if args.log_only:
        _redirect_output(run_dir / "train.log")
    return run(cfg, run_dir, ckpt, resuming=bool(args.resume), echo=not args.log_only)


def _redirect_output(log_path: Path) -> None:
    """Point fds 1 and 2 at train.log, so a launcher needs no pipe to drain and even a crash
    inside a C extension leaves its message in the run directory."""
    import os

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def run(cfg, run_dir: Path, ckpt, resuming: bool, echo: bool = True) -> int:
    # mlx is imported only now: config errors above are reported without paying for it.
    from trainer.data import DataError
    from trainer.loop import RunLog, StopFlag, TrainingError, prepare, train
    from trainer.model import ModelError

    stop = StopFlag()
    _install_stop_handlers(stop, run_dir)
    log = RunLog(run_dir / "train.log", echo=echo)
    if not resuming:
        write_status(run_dir, state="pending", started_at=time.time(), total_steps=cfg.training.iters, step=0)
    dump_toml(cfg, run_dir / "config.toml")
    try:
        prep = prepare(cfg, log)
        if not resuming:
            cfg = replace_value(cfg, "model.resolved_path", str(prep.resolved_path))
            dump_toml(cfg, run_dir / "config.toml")
        outcome: dict = {}  # early stop details for the final status event
        state = train(run_dir, cfg, prep, log, stop, ckpt, outcome)
    except (DataError, ModelError, ConfigError) as exc:
        return _failed(run_dir, log, str(exc), EXIT_BAD_INPUT)
    except TrainingError as exc:
        return _failed(run_dir, log, str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        log(f"stopped at once by a second {stop.reason or 'signal'}; the last checkpoint is kept")
        write_status(run_dir, state="stopped", ended_at=time.time())
        return EXIT_STOPPED
    except Exception as exc:  # anything unexpected: full traceback in the log, one line out
        log(traceback.format_exc().rstrip())
        return _failed(run_dir, log, describe(exc), EXIT_ERROR)
    finally:
        log.close()
    write_status(run_dir, state=state, ended_at=time.time())
    _event(run_dir, state, **outcome)
    if state == "stopped":
        print(f"stopped by {stop.reason}; resume with: orpo-train --resume {run_dir}", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    return EXIT_OK


def _event(run_dir: Path, state: str, **extra) -> None:
    from trainer.events import MetricsWriter
    from trainer.runs import read_status as _rs

    step = (_rs(run_dir) or {}).get("step", 0)
    MetricsWriter(run_dir / "metrics.jsonl").write("status", step, state=state, **extra)


def _failed(run_dir: Path, log, message: str, code: int) -> int:
    log(f"failed: {message}")
    write_status(run_dir, state="failed", error=message, ended_at=time.time())
    _event(run_dir, "failed", error=message)
    print(f"orpo-train: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
