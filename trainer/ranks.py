"""Starting and supervising the ranks of a distributed run (no mlx here).

`orpo-train PRESET --np N` stays the one process whoever started the run knows about: it
holds the run's lock, its pid is in the status, and it starts N rank processes of its own
(`python -m trainer --rank-of RUN_DIR`) with the environment MLX's ring backend reads
(MLX_RANK and MLX_HOSTFILE, as `mlx.launch` sets them). It passes SIGINT/SIGTERM on to every
rank (each rank is in its own session, so a terminal's Ctrl-C reaches the ranks once, through
here), and watches them: when a rank dies, the others would wait for it forever inside an
all-reduce, so they are killed at once and the run is marked failed with the rank's last
error line.

With a hostfile (`--hostfile`, an mlx.launch hostfile; trainer.pure.hostfile) the ranks are
placed on its hosts as mlx.launch would place them, with the environment it would give
them: a rank on this machine is started as above, a rank on another host through
`ssh -o BatchMode=yes HOST 'echo $$; ...; exec python -m trainer --rank-of RUN_DIR --remote'`.
Its output comes back through ssh into `train.rank<N>.log` here, and the pid it prints first
is how a stop reaches it (`ssh HOST kill -INT PID`). Before the ranks start, each other host
gets the run folder's config.toml (and, on resume, the checkpoint) at the same path.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from trainer.backend_choice import Backend
from trainer.pure.events import MetricsWriter
from trainer.pure.host_checks import SSH_FAILED
from trainer.pure.hostfile import (
    RING_FIRST_PORT,
    Hostfile,
    envs_dict,
    jaccl_setup,
    mpi_hostfile_text,
    remote_script,
    ring_addresses,
    ssh_argv,
)
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import read_status, write_status
from trainer.pure.states import RunState
from trainer.pure.trainer_process import (
    HOSTFILE_ENV,
    LAUNCHER_PID_ENV,
    PROG,
    RANK_ENV,
    RANK_OF_FLAG,
    RANKS_HERE_ENV,
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
REMOTE_TIMEOUT_S = 60  # one ssh call that stages files on a host or signals a rank there
REMOTE_FLAG = "--remote"


@dataclass(frozen=True)
class Placement:
    """Where each rank runs (None: this machine; else the host to ssh into) and what every
    rank is started with beyond its rank: environment, and files (an environment variable
    -> the text of the file it must name)."""

    hosts: tuple[str | None, ...]
    env: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    mpi_hostfile: str | None = None  # the text of mpirun's --hostfile, for MPI over hosts

    @classmethod
    def local(cls, n: int) -> Placement:
        """n ranks here, on free ports of this machine when on the ring."""
        return cls((None,) * n, files={HOSTFILE_ENV: ring_hostfile(n)})

    @property
    def n(self) -> int:
        return len(self.hosts)

    def ranks_here(self, rank: int) -> int:
        """Ranks sharing rank `rank`'s machine."""
        return Counter(self.hosts)[self.hosts[rank]]


def host_placement(hostfile: Hostfile, launch_backend: str, is_here) -> Placement:
    """The placement mlx.launch would give the ranks of `hostfile` on `launch_backend`.
    `is_here(name)` says whether a host is this machine. The ring ports of ranks that are all
    here are free ones (tests and --np runs beside each other must not collide); across
    hosts they count up from mlx.launch's starting port."""
    hosts = tuple(None if is_here(h.ssh) else h.ssh for h in hostfile.hosts)
    env = envs_dict(hostfile)
    files: dict = {}
    mpi = None
    if launch_backend == "ring" and hostfile.size > 1:
        # A rank here listens on free ports (runs and tests side by side must not collide);
        # one elsewhere on mlx.launch's, counting up.
        ips = [h.ips for h in hostfile.hosts]
        free = iter(free_ports(sum(len(i) for i, h in zip(ips, hosts) if h is None)))
        counted = itertools.count(RING_FIRST_PORT)
        ports = [next(free if h is None else counted) for i, h in zip(ips, hosts) for _ in i]
        files[HOSTFILE_ENV] = ring_addresses(ips, ports)
    elif launch_backend.startswith("jaccl"):
        more_env, files = jaccl_setup(hostfile, launch_backend)
        env.update(more_env)
    elif launch_backend == "mpi":
        mpi = mpi_hostfile_text(hostfile)
    return Placement(hosts, env, files, mpi)


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
    """`overrides`: a resume's --set values, which config.toml does not hold."""
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


class RemoteError(Exception):
    """Another host could not be prepared for its rank: one line naming it."""


def _is_rank(proc: psutil.Process) -> bool:
    try:
        return RANK_OF_FLAG in proc.cmdline()
    except psutil.Error:
        return False


def mpirun_argv(n: int, rank_argv: list[str], env_names: list[str], hostfile: str | None = None) -> list[str]:
    """mpirun starting n ranks, here or on the hosts of an OpenMPI hostfile (OpenMPI's
    options; as root it wants to be told)."""
    argv = ["mpirun", "-np", str(n), "--oversubscribe"] + (["--hostfile", hostfile] if hostfile else [])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    for name in env_names:
        argv += ["-x", name]
    return argv + rank_argv


class Ranks:
    """The rank processes of one run, started and watched by this process: one process per
    rank on the ring and JACCL backends (here, or through ssh on another host), or one
    mpirun starting them all on MPI."""

    def __init__(self, run_dir: Path, n: int, checkpoint: Path | None, backend: Backend, log_only: bool,
                 force: bool = False, placement: Placement | None = None, overrides: Sequence[str] = ()):
        self.run_dir, self.n, self.backend = run_dir, n, backend
        self.placement = placement or Placement.local(n)
        self.folder = RunFolder(run_dir)
        self.checkpoint = checkpoint
        self.argv = rank_argv(run_dir, checkpoint, backend.name, log_only, force, overrides)
        self.procs: list[subprocess.Popen] = []
        self.remote_pids: dict[int, int] = {}  # rank -> its pid on its host, once it said it
        self.signals = 0
        self.temp_files: list[Path] = []
        self.mpi_signalled: tuple[int, int] | None = None  # (rank, -signal) as mpirun reports it
        self.mpi_reader: threading.Thread | None = None  # reads mpirun's stderr, sets mpi_signalled

    @property
    def mpi(self) -> bool:
        return self.backend.name == "mpi"

    def _temp_file(self, text: str, suffix: str = ".json") -> str:
        fd, path = tempfile.mkstemp(prefix="orpo-ranks-", suffix=suffix)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        self.temp_files.append(Path(path))
        return path

    def start(self) -> None:
        place = self.placement
        base = {**os.environ, **self.backend.env, **place.env, LAUNCHER_PID_ENV: str(os.getpid())}
        if self.mpi:
            # rank 0 speaks where this process does; the others send their output to their
            # own logs themselves (cli._rank_main), mpirun having one output for all.
            names = [*self.backend.env, *place.env, LAUNCHER_PID_ENV]
            if place.mpi_hostfile is not None:
                base[RANKS_HERE_ENV] = str(max(place.ranks_here(r) for r in range(self.n)))
                names.append(RANKS_HERE_ENV)
            argv = mpirun_argv(self.n, self.argv, names,
                               self._temp_file(place.mpi_hostfile, ".txt") if place.mpi_hostfile else None)
            proc = subprocess.Popen(argv, env=base, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
            self.procs.append(proc)
            self.mpi_reader = threading.Thread(target=self._read_mpirun, args=(proc.stderr,), daemon=True)
            self.mpi_reader.start()
            return
        files = place.files
        for name, text in files.items():
            base[name] = self._temp_file(text)
        for rank, host in enumerate(place.hosts):
            out = None if rank == 0 else open(self.folder.rank_log(rank), "ab")  # rank 0 speaks where we do
            try:
                if host is None:
                    env = {**base, RANK_ENV: str(rank), RANKS_HERE_ENV: str(place.ranks_here(rank))}
                    self.procs.append(subprocess.Popen(self.argv, env=env, stdout=out, stderr=out,
                                                       stdin=subprocess.DEVNULL, start_new_session=True))
                else:
                    self._start_remote(rank, host, files, out)
            finally:
                if out is not None:
                    out.close()

    def _start_remote(self, rank: int, host: str, files: dict, out) -> None:
        """Rank `rank` on `host` through ssh: its output into its log here (the pid it prints
        first is kept for signalling it)."""
        env = {**self.backend.env, **self.placement.env, RANK_ENV: str(rank),
               RANKS_HERE_ENV: str(self.placement.ranks_here(rank))}
        script = remote_script(os.getcwd(), env, files, [*self.argv, REMOTE_FLAG])
        proc = subprocess.Popen(ssh_argv(host, script), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=out, start_new_session=True)
        self.procs.append(proc)
        log = open(self.folder.rank_log(rank), "ab")
        threading.Thread(target=self._read_remote, args=(rank, proc.stdout, log), daemon=True).start()

    def _read_remote(self, rank: int, stream, log) -> None:
        first = stream.readline()
        if first.strip().isdigit():
            self.remote_pids[rank] = int(first)
        else:
            log.write(first)
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
        log.close()
        stream.close()

    def stage_remote_hosts(self) -> None:
        """Give every other host the run folder a rank reads, at the same path: config.toml
        and, on resume, the checkpoint (both written to a temporary name, then moved)."""
        hosts = sorted({h for h in self.placement.hosts if h is not None})
        if not hosts:
            return
        run = shlex.quote(str(self.run_dir))
        config = self.folder.config
        steps = [(f"mkdir -p {run} && cat > {shlex.quote(str(config))}.part && "
                  f"mv {shlex.quote(str(config))}.part {shlex.quote(str(config))}", config.read_bytes())]
        if self.checkpoint is not None:
            packed = io.BytesIO()
            with tarfile.open(fileobj=packed, mode="w") as tar:
                tar.add(self.checkpoint, arcname=self.checkpoint.name)
            parent = shlex.quote(str(self.checkpoint.parent))
            steps.append((f"mkdir -p {parent} && tar -xf - -C {parent}", packed.getvalue()))
        for host in hosts:
            for command, data in steps:
                done = subprocess.run(ssh_argv(host, command), input=data, capture_output=True,
                                      timeout=REMOTE_TIMEOUT_S)
                if done.returncode != 0:
                    why = (done.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit {done.returncode}"])[-1]
                    raise RemoteError(f"{host}: cannot copy the run folder's files to the same path there: {why}")

    def forward(self, signum: int) -> None:
        """A stop reaches every rank itself: mpirun would end the job on SIGINT rather than
        pass it on, so under MPI its children (the ranks) get the signal directly; a rank on
        another host gets it through ssh. (The ranks also vote on stopping at every step, so
        a stop that reaches one rank stops them all after the same step.)"""
        self.signals += 1
        targets = []
        for rank, (p, host) in enumerate(zip(self.procs, self.placement.hosts if not self.mpi else [None])):
            if p.poll() is not None:
                continue
            if self.mpi:
                targets += [c.pid for c in psutil.Process(p.pid).children(recursive=True) if _is_rank(c)]
            elif host is None:
                targets.append(p.pid)
            elif rank in self.remote_pids:
                self._remote_kill(host, self.remote_pids[rank], signum, wait=False)
        for pid in targets:
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, psutil.Error):
                pass

    def _remote_kill(self, host: str, pid: int, signum: int, wait: bool) -> None:
        argv = ssh_argv(host, f"kill -{signal.Signals(signum).name.removeprefix('SIG')} {pid}")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            if wait:
                proc.wait(timeout=REMOTE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def kill_all(self) -> None:
        if not self.mpi:
            for rank, (p, host) in enumerate(zip(self.procs, self.placement.hosts)):
                if host is not None and p.poll() is None and rank in self.remote_pids:
                    self._remote_kill(host, self.remote_pids[rank], signal.SIGKILL, wait=True)
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.wait()

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
            for path in self.temp_files:
                path.unlink(missing_ok=True)

    def _cause(self) -> tuple[int, int]:
        """The failed rank to name, with its exit code. One rank's end makes its peers fail
        too (a lost connection inside a collective), often within the same poll, so the ranks
        get a moment to end on their own; then a refusal (exit 2, a reason of its own) or a
        rank killed by a signal (or whose ssh link ended) is named before a rank that merely errored, and a lower rank
        before a higher. Under MPI there is one mpirun: the rank is the one that left an
        error line (rank 0 if none did), and the code is mpirun's."""
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(POLL_S / 4)
        if self.mpi:
            if self.mpi_reader is not None and self.procs[0].poll() is not None:
                # mpirun has ended, but the line naming the rank that died may still be in the
                # pipe, not yet read: read to its end (a moment; its writers are gone).
                self.mpi_reader.join(GRACE_S)
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
            # ssh's 255 for a rank on another host is its kill or a lost link: a cause, like a
            # signal, rather than the peer's "connection to a peer was lost" it brings about.
            killed = code < 0 or (code == SSH_FAILED and self.placement.hosts[rank] is not None)
            return (0 if code == ExitCode.BAD_INPUT else 1 if killed else 2, rank)

        return min(failed, key=weight)

    def _failed(self, rank: int, code: int) -> int:
        self.kill_all()
        status = read_status(self.run_dir) or {}
        if rank == 0 and status.get("state") == RunState.FAILED and status.get("error"):
            why = status["error"]  # rank 0 recorded its own failure
        else:
            why = last_error(self.run_dir, rank)
        host = self.placement.hosts[rank] if not self.mpi else None
        if host is None:
            message = f"rank {rank} {describe_exit(code)}: {why}"
        elif code == SSH_FAILED:
            message = f"rank {rank} on {host} was killed or lost its ssh connection (ssh exit {code}): {why}"
        else:
            message = f"rank {rank} on {host} {describe_exit(code)}: {why}"
        write_status(self.run_dir, state=RunState.FAILED, error=message, ended_at=time.time())
        try:
            with MetricsWriter(self.folder.metrics) as writer:
                writer.write("status", status.get("step", 0), state=str(RunState.FAILED), error=message)
        except OSError:
            pass
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
        return code if code == ExitCode.BAD_INPUT else ExitCode.ERROR


def launch(run_dir: Path, n: int, checkpoint: Path | None, backend: Backend, log_only: bool, force: bool = False,
           placement: Placement | None = None, overrides: Sequence[str] = ()) -> int:
    ranks = Ranks(run_dir, n, checkpoint, backend, log_only, force, placement, overrides)
    try:
        ranks.stage_remote_hosts()
    except (RemoteError, OSError, subprocess.TimeoutExpired) as exc:
        message = str(exc) if isinstance(exc, RemoteError) else f"cannot prepare the other hosts: {exc}"
        write_status(run_dir, state=RunState.FAILED, error=message, ended_at=time.time())
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
        return ExitCode.ERROR

    def handler(signum, _frame):
        ranks.forward(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ranks.start()
    return ranks.supervise()


__all__ = ["launch", "Ranks", "Placement", "host_placement", "ring_hostfile", "last_error", "rank_argv"]
