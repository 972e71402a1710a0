"""Starting and supervising the local ranks of a distributed run (no mlx here).

`orpo-train PRESET --np N` stays the one process whoever started the run knows about: it
holds the run's lock, its pid is in the status, and it starts N rank processes of its own
(`python -m trainer --rank-of RUN_DIR`) with the environment MLX's ring backend reads
(MLX_RANK and MLX_HOSTFILE, as `mlx.launch` sets them). It passes SIGINT/SIGTERM on to every
rank (each rank is in its own session, so a terminal's Ctrl-C reaches the ranks once, through
here), and watches them: when a rank dies, the others would wait for it forever inside an
all-reduce, so they are killed at once and the run is marked failed with the rank's last
error line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from trainer.backend_choice import Backend
from trainer.pure.events import MetricsWriter
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import read_status, write_status
from trainer.pure.states import RunState
from trainer.pure.trainer_process import (
    HOSTFILE_ENV,
    LAUNCHER_PID_ENV,
    PROG,
    RANK_ENV,
    RANK_OF_FLAG,
    TRAINER,
    ExitCode,
    set_args,
)

POLL_S = 0.2
# OpenMPI's line for a rank that died of a signal: "mpirun noticed that process rank 1 with
# PID 123 on node x exited on signal 9 (Killed)."
MPIRUN_SIGNAL = re.compile(r"process rank (\d+) .*exited on signal (\d+)")
GRACE_S = 2.0  # how long the peers of a failed rank get to end on their own (see Ranks._cause)
CLEAN_EXITS = (ExitCode.OK, ExitCode.STOPPED)


def free_ports(n: int) -> list[int]:
    """n TCP ports nobody listens on now (the ranks bind them a moment later)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ring_hostfile(n: int) -> str:
    """The ring backend's hostfile for n ranks on this machine: one address per rank."""
    return json.dumps([[f"127.0.0.1:{port}"] for port in free_ports(n)])


def rank_argv(run_dir: Path, checkpoint: Path | None, backend: str, log_only: bool, force: bool = False,
              overrides: Sequence[str] = ()) -> list[str]:
    """`overrides`: the run's `--set`s. A rank reads the run's config.toml, which a resume
    does not rewrite, so a resume's `--set training.iters=N` must reach every rank itself."""
    argv = [*TRAINER, RANK_OF_FLAG, str(run_dir), "--backend", backend, *set_args(overrides)]
    if checkpoint is not None:
        argv += ["--from-checkpoint", str(checkpoint)]
    return argv + (["--log-only"] if log_only else []) + (["--force"] if force else [])


def has_error_line(run_dir: Path, rank: int) -> bool:
    path = RunFolder(run_dir).rank_log(rank)
    try:
        return any(ln.startswith(f"{PROG}: ") for ln in path.read_text(errors="replace").splitlines())
    except OSError:
        return False


def last_error(run_dir: Path, rank: int) -> str:
    """The line a rank left that best says why it ended: its `orpo-train:` line, else the
    last line of its log."""
    path = RunFolder(run_dir).rank_log(rank)
    try:
        with path.open("rb") as fh:
            fh.seek(max(path.stat().st_size - 8192, 0))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    for line in reversed(lines):
        if line.startswith(f"{PROG}: "):
            return line.removeprefix(f"{PROG}: ")
    return lines[-1] if lines else "no output"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def mpirun_argv(n: int, rank_argv: list[str], env_names: list[str]) -> list[str]:
    """mpirun starting n local ranks (OpenMPI's options; as root it wants to be told)."""
    argv = ["mpirun", "-np", str(n), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    for name in env_names:
        argv += ["-x", name]
    return argv + rank_argv


class Ranks:
    """The rank processes of one run, started and watched by this process: one process per
    rank on the ring backend, or one mpirun starting them all on MPI."""

    def __init__(self, run_dir: Path, n: int, checkpoint: Path | None, backend: Backend, log_only: bool,
                 force: bool = False, overrides: Sequence[str] = ()):
        self.run_dir, self.n, self.backend = run_dir, n, backend
        self.folder = RunFolder(run_dir)
        self.argv = rank_argv(run_dir, checkpoint, backend.name, log_only, force, overrides)
        self.procs: list[subprocess.Popen] = []
        self.signals = 0
        self.hostfile: Path | None = None
        self.mpi_signalled: tuple[int, int] | None = None  # (rank, -signal) as mpirun reports it

    @property
    def mpi(self) -> bool:
        return self.backend.name == "mpi"

    def start(self) -> None:
        base = {**os.environ, **self.backend.env, LAUNCHER_PID_ENV: str(os.getpid())}
        if self.mpi:
            # rank 0 speaks where this process does; the others send their output to their
            # own logs themselves (cli._rank_main), mpirun having one output for all.
            argv = mpirun_argv(self.n, self.argv, [*self.backend.env, LAUNCHER_PID_ENV])
            proc = subprocess.Popen(argv, env=base, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
            self.procs.append(proc)
            threading.Thread(target=self._read_mpirun, args=(proc.stderr,), daemon=True).start()
            return
        fd, hostfile = tempfile.mkstemp(prefix="orpo-hosts-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            fh.write(ring_hostfile(self.n))
        self.hostfile = Path(hostfile)
        base[HOSTFILE_ENV] = hostfile
        for rank in range(self.n):
            env = {**base, RANK_ENV: str(rank)}
            if rank == 0:  # rank 0 speaks where this process does (the terminal, or train.log)
                out = None
            else:
                out = open(self.folder.rank_log(rank), "ab")
            try:
                self.procs.append(subprocess.Popen(self.argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                                   start_new_session=True))
            finally:
                if out is not None:
                    out.close()

    def _read_mpirun(self, stream) -> None:
        """Pass mpirun's stderr on (the ranks' too, rank 0's being the run's), noting which
        rank it says died of a signal: nothing else names a SIGKILLed rank under MPI."""
        for raw in iter(stream.readline, b""):
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()
            found = MPIRUN_SIGNAL.search(raw.decode("utf-8", "replace"))
            if found and self.mpi_signalled is None:
                self.mpi_signalled = (int(found[1]), -int(found[2]))
        stream.close()

    def forward(self, signum: int) -> None:
        """A stop reaches every rank itself: mpirun would end the job on SIGINT rather than
        pass it on, so under MPI its children (the ranks) get the signal directly."""
        self.signals += 1
        targets = []
        for p in self.procs:
            if p.poll() is None:
                targets += [c.pid for c in psutil.Process(p.pid).children(recursive=True)] if self.mpi else [p.pid]
        for pid in targets:
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, psutil.Error):
                pass

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.wait()

    def supervise(self) -> int:
        """Wait for every rank; the run's exit code. A rank that fails (or dies) ends them all."""
        try:
            while True:
                codes = [p.poll() for p in self.procs]
                if any(c is not None and c not in CLEAN_EXITS for c in codes):
                    return self._failed(*self._cause())
                if all(c is not None for c in codes):
                    return codes[0]
                time.sleep(POLL_S)
        finally:
            self.kill_all()
            if self.hostfile is not None:
                self.hostfile.unlink(missing_ok=True)

    def _cause(self) -> tuple[int, int]:
        """The failed rank to name, with its exit code. One rank's end makes its peers fail
        too (a lost connection inside a collective), often within the same poll, so the ranks
        get a moment to end on their own; then a refusal (exit 2, a reason of its own) or a
        rank killed by a signal is named before a rank that merely errored, and a lower rank
        before a higher. Under MPI there is one mpirun: the rank is the one that left an
        error line (rank 0 if none did), and the code is mpirun's."""
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(POLL_S / 4)
        if self.mpi:
            if self.mpi_signalled is not None:
                return self.mpi_signalled
            code = self.procs[0].returncode
            status = read_status(self.run_dir) or {}
            if status.get("state") == RunState.FAILED:
                return 0, code
            erred = [r for r in range(1, self.n) if has_error_line(self.run_dir, r)]
            return (erred[0] if erred else 0), code
        failed = [(rank, p.returncode) for rank, p in enumerate(self.procs)
                  if p.returncode is not None and p.returncode not in CLEAN_EXITS]

        def weight(item: tuple[int, int]) -> tuple[int, int]:
            rank, code = item
            return (0 if code == ExitCode.BAD_INPUT else 1 if code < 0 else 2, rank)

        return min(failed, key=weight)

    def _failed(self, rank: int, code: int) -> int:
        self.kill_all()
        status = read_status(self.run_dir) or {}
        if rank == 0 and status.get("state") == RunState.FAILED and status.get("error"):
            why = status["error"]  # rank 0 recorded its own failure
        else:
            why = last_error(self.run_dir, rank)
        message = f"rank {rank} {describe_exit(code)}: {why}"
        write_status(self.run_dir, state=RunState.FAILED, error=message, ended_at=time.time())
        try:
            with MetricsWriter(self.folder.metrics) as writer:
                writer.write("status", status.get("step", 0), state=str(RunState.FAILED), error=message)
        except OSError:
            pass
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
        return code if code == ExitCode.BAD_INPUT else ExitCode.ERROR


def launch(run_dir: Path, n: int, checkpoint: Path | None, backend: Backend, log_only: bool, force: bool = False,
           overrides: Sequence[str] = ()) -> int:
    ranks = Ranks(run_dir, n, checkpoint, backend, log_only, force, overrides)

    def handler(signum, _frame):
        ranks.forward(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ranks.start()
    return ranks.supervise()


__all__ = ["launch", "Ranks", "ring_hostfile", "last_error", "rank_argv"]
