"""The contract between ``orpo-train`` and whoever starts it (the app, the sweep queue, the
data check): its command line, its first stdout line, its exit codes.

Command line::

    orpo-train PRESET.toml [--runs-dir DIR] [--set KEY=VALUE ...] [--log-only] [--force]
    orpo-train --resume RUN_DIR [--set training.iters=N ...] [--log-only] [--force]
    orpo-train preflight PRESET.toml [--set KEY=VALUE ...]
    orpo-train estimate PRESET.toml [--set KEY=VALUE ...] [--json]
    orpo-train check-hosts HOSTFILE [--preset PRESET.toml] [--set KEY=VALUE ...]

- The first stdout line of a training run is the run folder's path; it is printed once the
  folder exists with its config.toml and a status. With ``--log-only`` nothing else comes
  on stdout or stderr: the trainer sends both into the run's train.log, so a launcher needs
  no pipe to drain.
- Exit codes: :class:`ExitCode`. On exit 2 (and on 1 before the run folder exists) the last
  stderr line, ``orpo-train: <message>``, is the one-line reason.
- Before loading the weights a training run compares its memory estimate with the device's
  memory and refuses a run that cannot fit (exit 2, both numbers on the reason line);
  ``--force`` trains anyway.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

__all__ = ["RANK_ENV", "MPI_RANK_ENVS", "rank_from_env", "HOSTFILE_ENV", "LAUNCHER_PID_ENV", "RANKS_HERE_ENV", "RANK_OF_FLAG", "BACKENDS",  # noqa: RUF100
           "ExitCode", "TRAINER", "PROG", "train_argv", "resume_argv", "preflight_argv", "estimate_argv", "check_hosts_argv",
           "read_first_line", "read_run_dir", "error_line", "set_args"]

PROG = "orpo-train"
# The trainer as a module of the interpreter running the caller: the same environment, and
# no dependence on console scripts being on PATH.
TRAINER = (sys.executable, "-m", "trainer")


# Set for every rank of a distributed run (by mlx.launch, or by our own launcher for local
# ranks): its rank, and the file naming every rank's address (the ring backend's hostfile).
RANK_ENV = "MLX_RANK"
# mpirun names a rank in these instead (OpenMPI, then MPICH and others).
MPI_RANK_ENVS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK")
HOSTFILE_ENV = "MLX_HOSTFILE"
# The pid of the launcher supervising the ranks: the run's status names it, so stopping the
# run signals the launcher, which passes the signal on to every rank.
LAUNCHER_PID_ENV = "ORPO_TUI_LAUNCHER_PID"
# How many ranks of the run share this rank's machine (its memory check prices them all).
RANKS_HERE_ENV = "ORPO_TUI_RANKS_HERE"
# In every rank's command line (`orpo-train --rank-of RUN_DIR`): how a rank is told apart
# from another process that got its pid since.
RANK_OF_FLAG = "--rank-of"
# auto: the one that scales where it runs (trainer.pure.backend); any: MLX's own pick.
# jaccl, jaccl-ring: RDMA over Thunderbolt between Macs, for the hosts of a hostfile only.
BACKENDS = ("auto", "ring", "mpi", "jaccl", "jaccl-ring", "any")


def rank_from_env(env) -> int | None:
    """This process's rank when a launcher (ours, mlx.launch or mpirun) started it as one."""
    for name in (RANK_ENV, *MPI_RANK_ENVS):
        if env.get(name, "").isdigit():
            return int(env[name])
    return None


class ExitCode(IntEnum):
    OK = 0  # finished (all iterations, or an early stop)
    ERROR = 1  # anything unexpected, a diverged loss
    BAD_INPUT = 2  # a bad preset, --set, dataset or run folder, or a run that does not fit in memory; one line on stderr
    HOSTS_NOT_READY = 3  # check-hosts found a problem on a host (one line each on stdout)
    STOPPED = 130  # stopped by SIGINT/SIGTERM after saving; resumable


def set_args(overrides: Sequence[str]) -> list[str]:
    """``["--set", "k=v", ...]`` for ``k=v`` overrides."""
    return [x for item in overrides for x in ("--set", item)]


def train_argv(preset: Any, runs_dir: Any = None, overrides: Sequence[str] = (), log_only: bool = True,
               force: bool = False) -> list[str]:
    """`force`: train even when the memory estimate exceeds the device's memory."""
    args = [*TRAINER, str(preset)]
    if runs_dir is not None:
        args += ["--runs-dir", str(runs_dir)]
    return args + set_args(overrides) + (["--log-only"] if log_only else []) + (["--force"] if force else [])


def resume_argv(run_dir: Any, overrides: Sequence[str] = (), log_only: bool = True, force: bool = False) -> list[str]:
    return ([*TRAINER, "--resume", str(run_dir), *set_args(overrides)] + (["--log-only"] if log_only else [])
            + (["--force"] if force else []))


def check_hosts_argv(hostfile: Any, preset: Any = None, overrides: Sequence[str] = ()) -> list[str]:
    return [*TRAINER, "check-hosts", str(hostfile)] + (["--preset", str(preset), *set_args(overrides)] if preset else [])


def preflight_argv(preset: Any, overrides: Sequence[str] = ()) -> list[str]:
    return [*TRAINER, "preflight", str(preset), *set_args(overrides)]


def estimate_argv(preset: Any, overrides: Sequence[str] = (), as_json: bool = True) -> list[str]:
    return [*TRAINER, "estimate", str(preset), *set_args(overrides)] + (["--json"] if as_json else [])


def read_first_line(proc: subprocess.Popen, timeout: float | None = None) -> str | None:
    """The first stdout line of a starting `orpo-train` (a text-mode pipe), or None when it
    exits, or ``timeout`` passes, without printing one."""
    if timeout is not None:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
    return proc.stdout.readline().strip() or None


def read_run_dir(proc: subprocess.Popen, timeout: float | None = None) -> Path | None:
    """The run folder a starting trainer announces on its first stdout line."""
    line = read_first_line(proc, timeout)
    return Path(line) if line else None


def error_line(stderr_text: str, code: int | None = None) -> str:
    """The trainer's one-line reason from what it wrote on stderr."""
    lines = [ln for ln in stderr_text.strip().splitlines() if ln.strip()]
    if lines:
        return lines[-1].removeprefix(f"{PROG}: ")
    return f"{PROG} exited with {code}"
