"""`orpo-train`: train a preset into a new run directory, or resume one.

    orpo-train PRESET.toml [--runs-dir DIR] [--set section.key=value ...]
    orpo-train --resume RUN_DIR [--set training.iters=N ...]
    orpo-train preflight PRESET.toml [--set ...]   (a JSON report on the data; see preflight.py)
    orpo-train estimate PRESET.toml [--set ...] [--json]   (the run's peak memory; see estimate_cli.py)
    orpo-train check-hosts HOSTFILE [--preset PRESET.toml]   (ssh, python, mlx, paths on every host; see hosts.py)
    orpo-train fuse RUN_DIR [--best] [--quantize BITS] [--out DIR]   (a standalone model; see fuse.py)
    orpo-train serve RUN_DIR [--best] [--fused] [--base] [--port N]   (mlx_lm.server for the run; see serve.py)
    orpo-train push RUN_DIR --repo ID [--best] [--fused] [--private] [--dry-run DIR]   (to the hub; see push.py)
    orpo-train import-yaml FILE.yaml [--out PRESET.toml]   (from an mlx-lm-lora config; see interop.py)
    orpo-train export-yaml PRESET.toml [--out FILE.yaml]   (to an mlx-lm-lora config)

The first line on stdout is the run directory; the command line, that line and the exit
codes are the contract in trainer.pure.trainer_process. The run folder's layout is in
trainer.pure.run_folder.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from trainer.keep_awake import KeepAwake
from trainer.pure.app_folders import SettingsError, resolve_folders
from trainer.pure.config import ConfigError, OutputConfig, apply_overrides, check, dump_toml, load_preset, replace_value
from trainer.pure.events import MetricsWriter
from trainer.pure.hostfile import HostfileError, init_backend, is_local, launch_backend, read_hostfile
from trainer.pure.messages import describe
from trainer.pure.rank_status import RANK_PIDS, WORLD_SIZE
from trainer.pure.run_folder import RunFolder, checkpoint_step
from trainer.pure.run_lock import RunBusy, RunLock
from trainer.pure.runs import create_run_dir, read_status, write_status
from trainer.pure.states import RunState
from trainer.pure.train_log import failure_line, start_line
from trainer.pure.trainer_process import BACKENDS, LAUNCHER_PID_ENV, PROG, RANK_OF_FLAG, ExitCode, rank_from_env
from trainer.reporter import LogReporter, RunFolderReporter
from trainer.run_control import RunLog, StopFlag
from trainer.trackers import LiveTrackers, TrackerMissing, check_installed

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
    "training.prevent_sleep",
    "distributed.np",  # the checkpoint is global state: any number of ranks continues it
    "distributed.backend",
    "distributed.hostfile",
)


class BadInput(Exception):
    """A usage problem reported as one line with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="ORPO fine-tuning on MLX.")
    p.add_argument("preset", nargs="?", help="preset TOML file to train")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or crashed run")
    p.add_argument("--runs-dir", metavar="DIR",
                   help="where run folders go (default: output.runs_dir; left at 'runs', the app's runs folder)")
    p.add_argument("--log-only", action="store_true",
                   help="after the run directory line, send all output to its train.log (for launchers such as orpo-tui)")
    p.add_argument("--np", type=int, metavar="N",
                   help="train on N local ranks (data parallel, MLX distributed; default: distributed.np)")
    p.add_argument("--hostfile", metavar="FILE",
                   help="train on the hosts of this mlx.launch hostfile, one rank per entry; the first must be "
                        "this machine (default: distributed.hostfile)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="MLX distributed backend for the ranks (default: distributed.backend; with a hostfile, "
                        "the file's backend, else ring)")
    # A rank of a distributed run, started by the launcher above (or by mlx.launch).
    p.add_argument(RANK_OF_FLAG, metavar="RUN_DIR", help=argparse.SUPPRESS)
    p.add_argument("--from-checkpoint", metavar="DIR", help=argparse.SUPPRESS)
    # A rank on another host: its run folder there is a copy; its output goes back through ssh.
    p.add_argument("--remote", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set training.iters=50 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="train even when the memory estimate exceeds the device's memory")
    return p


def _fail_line(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return ExitCode.BAD_INPUT


def _install_stop_handlers(stop, run_dir: Path, leader: bool = True) -> None:
    """First SIGINT/SIGTERM: finish the step, save, exit 130. A second one: stop at once
    (the last checkpoint stays valid). SIGHUP is ignored so a dropped SSH link does not end
    a run started from a bare shell."""

    def handler(signum, _frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.request(signal.Signals(signum).name)
        # Visible at once to anyone watching the run, before the current step ends.
        if leader and (read_status(run_dir) or {}).get("state") == RunState.RUNNING:
            write_status(run_dir, state=RunState.STOPPING)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _settle_world(args, cfg) -> None:
    """The ranks and backend of this run into `args`: --hostfile, else --np, else the
    preset's [distributed] hostfile, else its np (on resume the run's own, so --np can change
    the rank count); --backend, else distributed.backend. `args.hosts` is the hostfile read
    (None for ranks on this machine only)."""
    args.hosts = None
    path = args.hostfile or (cfg.distributed.hostfile if args.np is None else "")
    args.backend = args.backend or cfg.distributed.backend
    if path:
        _settle_hosts(args, path)
    args.np = cfg.distributed.np if args.np is None else args.np
    if args.np < 1:
        raise BadInput(f"--np {args.np}: must be at least 1")
    if args.hosts is None and args.backend.startswith("jaccl"):
        raise BadInput(f"--backend {args.backend}: JACCL connects Macs over Thunderbolt; give the hosts with --hostfile")
    if cfg.training.batch_size % args.np:
        raise BadInput(f"training.batch_size = {cfg.training.batch_size} does not divide evenly across {args.np} ranks; "
                       f"choose a multiple of {args.np}")


def _settle_hosts(args, path: str) -> None:
    """Read the hostfile and refuse what cannot start: rank 0 writes the run folder and must
    be this process's machine; the backend must find in the file what it needs."""
    from trainer.hosts import local_names, start_problems

    try:
        hosts = read_hostfile(path)
    except HostfileError as exc:
        raise BadInput(str(exc)) from None
    if args.np is not None and args.np != hosts.size:
        raise BadInput(f"--np {args.np} and --hostfile {path} ({hosts.size} ranks) disagree; give one of them")
    args.launch_backend = launch_backend(hosts, args.backend)
    problems = start_problems(hosts, args.backend, local_names())
    if problems:
        raise BadInput(problems[0])
    args.hosts, args.np, args.hostfile = hosts, hosts.size, str(Path(path).expanduser().resolve())


def _new_run(args):
    cfg = load_preset(args.preset)
    cfg = apply_overrides(cfg, args.overrides)
    check(cfg, args.preset)
    _settle_world(args, cfg)
    # What the run trains on is what a resume continues on: the hostfile by its absolute path
    # (found from any folder), or none when --np put the ranks on this machine.
    if args.hosts is not None:
        cfg = replace_value(cfg, "distributed.hostfile", args.hostfile)
    elif cfg.distributed.hostfile:
        cfg = replace_value(cfg, "distributed.hostfile", "")
    _check_trackers(cfg, args.preset)
    # The run's config says what it trained on, --np and --backend included (compare shows it);
    # on hosts, the backend the file or --backend chose.
    backend = args.launch_backend if args.hosts is not None else args.backend
    cfg = replace_value(replace_value(cfg, "distributed.np", args.np), "distributed.backend", backend)
    runs_dir = _runs_dir(args.runs_dir, cfg.output.runs_dir)
    label = cfg.output.name or Path(args.preset).stem
    run_dir = create_run_dir(runs_dir, label)
    return cfg, run_dir, None, RunLock(run_dir).acquire()


def _check_trackers(cfg, source) -> None:
    """Refuse, before any training, a run told to report to a tracker whose library is not
    installed: a run that silently logs nowhere is found out only when the user looks."""
    try:
        check_installed(cfg.report.to)
    except TrackerMissing as exc:
        raise BadInput(f"{source}: report.to: {exc}") from None


def _runs_dir(flag: str | None, configured: str) -> Path:
    """--runs-dir, else the preset's output.runs_dir as written (relative to the current
    folder), except that the default `runs` means the app's runs folder (the settings file's
    runs_dir, a checkout's runs/, or an installed tool's user folder), so a run started here
    is listed in the app whichever folder the shell is in."""
    if flag:
        return Path(flag).expanduser()
    if configured != OutputConfig().runs_dir:
        return Path(configured).expanduser()
    try:
        return resolve_folders(None, None).runs
    except SettingsError as exc:
        raise BadInput(str(exc)) from None


def _resume_run(args):
    run_dir = Path(args.resume)
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise BadInput(f"{run_dir}: not a run directory (no {folder.config.name})")
    for item in args.overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUME_SETTABLE:
            raise BadInput(f"--set {key}: cannot be changed on resume (allowed: {', '.join(RESUME_SETTABLE)})")
    # The lock comes before any other read of the folder: from here on this process is its
    # only writer, and a second resume (or a trainer still loading) is refused at once.
    try:
        lock = RunLock(run_dir).acquire()
    except RunBusy as exc:
        raise BadInput(str(exc)) from None
    try:
        cfg = apply_overrides(load_preset(folder.config), args.overrides)
        check(cfg, str(folder.config))
        _settle_world(args, cfg)
        _check_trackers(cfg, folder.config)
        ckpt = folder.latest_checkpoint()
        done = checkpoint_step(ckpt) if ckpt else 0
        if done >= cfg.training.iters:
            raise BadInput(f"{run_dir}: already at step {done} of {cfg.training.iters}; extend it with --set training.iters=N")
    except BaseException:
        lock.release()
        raise
    return cfg, run_dir, ckpt, lock


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["preflight"]:
        from trainer.preflight import main as preflight_main  # loads mlx: only when asked

        return preflight_main(argv[1:])
    if argv[:1] in (["import-yaml"], ["export-yaml"]):
        from trainer.pure.interop import main as interop_main

        return interop_main(argv)
    if argv[:1] == ["estimate"]:
        from trainer.estimate_cli import main as estimate_main  # loads mlx: only when asked

        return estimate_main(argv[1:])
    if argv[:1] == ["check-hosts"]:
        from trainer.hosts import main as check_hosts_main

        return check_hosts_main(argv[1:])
    if argv[:1] == ["fuse"]:
        from trainer.fuse import main as fuse_main  # loads mlx: only when asked

        return fuse_main(argv[1:])
    if argv[:1] == ["serve"]:
        from trainer.serve import main as serve_main  # loads mlx: only when asked

        return serve_main(argv[1:])
    if argv[:1] == ["push"]:
        from trainer.push import main as push_main

        return push_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.rank_of:
        return _rank_main(args)
    if bool(args.preset) == bool(args.resume):
        return _fail_line("give either a PRESET file or --resume RUN_DIR")
    try:
        # `lock` is held until this process exits (the kernel drops it however it exits).
        cfg, run_dir, ckpt, lock = _resume_run(args) if args.resume else _new_run(args)
        folder = RunFolder(run_dir)
        # Before anything can fail: a run folder always holds its config and a status with
        # this trainer's pid, so a trainer that dies while starting (even on an import error)
        # shows as failed or crashed with its reason, never as a folder nobody can place.
        if args.resume:
            write_status(run_dir, state=RunState.PENDING, pid=os.getpid(), error=None, ended_at=None)
        else:
            dump_toml(cfg, folder.config)
            write_status(run_dir, state=RunState.PENDING, pid=os.getpid(), started_at=time.time(),
                         total_steps=cfg.training.iters, step=0)
        # On resume too: the rank count may change, and the earlier ranks' pids are void.
        write_status(run_dir, **{WORLD_SIZE: args.np, RANK_PIDS: None})
    except (ConfigError, BadInput) as exc:
        return _fail_line(str(exc))
    except OSError as exc:  # a read-only or full runs folder
        return _fail_line(f"{exc.filename or 'run folder'}: {exc.strerror or exc}")
    _log_fatal_errors(folder.log)
    print(run_dir, flush=True)
    if args.log_only:
        _redirect_output(folder.log)
    if args.np > 1:
        code = _launch_ranks(args, cfg, run_dir, ckpt)
    else:
        code = run(cfg, run_dir, ckpt, resuming=bool(args.resume), echo=not args.log_only, force=args.force)
    # Every write to the folder is done: let a resume in at once rather than after the
    # interpreter and the MLX stack have torn down, which can take seconds.
    lock.release()
    _notify(run_dir, echo=not args.log_only)
    return code


def _launch_ranks(args, cfg, run_dir: Path, ckpt) -> int:
    """This process holds the lock and supervises; the ranks train (trainer/ranks.py). It
    also holds the one sleep inhibitor of the run: the ranks on this machine need no more."""
    from trainer.backend_choice import choose
    from trainer.ranks import launch

    log = RunLog(RunFolder(run_dir).log, echo=not args.log_only)
    awake = KeepAwake.start(f"training {run_dir.name}") if cfg.training.prevent_sleep else None
    try:
        if awake is not None:
            awake.report(log)
        else:
            log("sleep is not prevented: training.prevent_sleep = false")
        if args.resume:
            _tidy_before_resume(RunFolder(run_dir), ckpt, log)
        placement = None
        if args.hosts is not None:
            backend, placement = _host_backend(args)
            here = placement.hosts.count(None)
            log(f"{args.np} ranks on the hosts of {args.hostfile} ({here} on this machine), {args.launch_backend} backend"
                + (f" ({backend.note})" if backend.note else ""))
        else:
            backend = choose(args.backend, args.np)
            log(f"{args.np} ranks on this machine, {backend.name} backend" + (f" ({backend.note})" if backend.note else ""))
        log.close()
        # A resume's --set values are not in config.toml, which the ranks read: they get them too.
        return launch(run_dir, args.np, ckpt, backend, args.log_only, force=args.force, placement=placement,
                      overrides=args.overrides if args.resume else ())
    finally:
        if awake is not None:
            awake.release()
        log.close()


def _host_backend(args):
    """The backend and placement of the ranks of a hostfile run."""
    from trainer.backend_choice import Backend, choose
    from trainer.hosts import local_names
    from trainer.ranks import host_placement

    names = local_names()
    name = init_backend(args.launch_backend)
    backend = choose("mpi", args.np) if name == "mpi" else Backend(name)
    return backend, host_placement(args.hosts, args.launch_backend, lambda host: is_local(host, names))


def _rank_main(args) -> int:
    """One rank of a distributed run: the run folder and its config exist (the launcher made
    them and holds the lock); rank 0 writes the folder, the others only their own log."""
    run_dir = Path(args.rank_of)
    folder = RunFolder(run_dir)
    try:
        cfg = apply_overrides(load_preset(folder.config), args.overrides)
    except ConfigError as exc:
        return _fail_line(str(exc))
    ckpt = Path(args.from_checkpoint) if args.from_checkpoint else None
    rank = rank_from_env(os.environ) or 0
    if args.remote:  # its output goes back through ssh into its log on the launcher's machine
        faulthandler.enable(file=sys.stderr, all_threads=True)
    else:
        if rank:
            _redirect_output(folder.rank_log(rank))  # under mpirun its output would join rank 0's
        _log_fatal_errors(folder.rank_log(rank), mark=False)
    return run(cfg, run_dir, ckpt, resuming=ckpt is not None,
               echo=args.remote or (not args.log_only and rank == 0), force=args.force, rank=rank, backend=args.backend,
               remote=args.remote)


# faulthandler writes through this file's descriptor when the process dies on a fatal signal
# (SIGABRT, SIGSEGV, SIGBUS...); it must stay open for the whole life of the process.
_FATAL_LOG = None


def _log_fatal_errors(log_path: Path, mark: bool = True) -> None:
    """Mark where this trainer's part of train.log begins (trainer.pure.crash_cause reads
    from there), and have a fatal signal dump every thread's stack into the log. The log
    gets a descriptor of its own, so the dump lands there with or without --log-only and
    whatever later happens to fds 1 and 2. A rank does not mark: the launcher's pid is the
    run's, and its mark already stands."""
    global _FATAL_LOG
    if mark:
        marker = RunLog(log_path, echo=False)
        marker(start_line(os.getpid()))
        marker.close()
    try:
        _FATAL_LOG = open(log_path, "ab", buffering=0)
    except OSError:
        return  # the run goes on; a crash would then show as killed with no error written
    faulthandler.enable(file=_FATAL_LOG, all_threads=True)


def _notify(run_dir: Path, echo: bool) -> None:
    """The user's notify_command, once the run's end is on record (its lines go to train.log)."""
    from trainer.notify import notify_run_end

    log = RunLog(RunFolder(run_dir).log, echo=echo)
    try:
        notify_run_end(run_dir, log)
    except KeyboardInterrupt:  # Ctrl-C while waiting on the command: the run is over anyway
        pass
    finally:
        log.close()


def _redirect_output(log_path: Path) -> None:
    """Point fds 1 and 2 at train.log, so a launcher needs no pipe to drain and even a crash
    inside a C extension leaves its message in the run directory."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def run(cfg, run_dir: Path, ckpt, resuming: bool, echo: bool = True, force: bool = False,
        rank: int | None = None, backend: str = "ring", remote: bool = False) -> int:
    """Train in this process. `rank` is set for a rank of a distributed run: the ranks join
    their group first, and only rank 0 writes the run folder (the others their own log; a
    `remote` rank only its output, which the launcher keeps as its log)."""
    folder = RunFolder(run_dir)
    stop = StopFlag()
    leader = not rank
    _install_stop_handlers(stop, run_dir, leader)
    log = RunLog(Path(os.devnull) if remote else folder.rank_log(rank or 0), echo=echo)
    launcher = os.environ.get(LAUNCHER_PID_ENV) if rank is not None else None
    # Only the run's writer (rank 0) reports to trackers, as it alone writes metrics.jsonl.
    trackers = (LiveTrackers(cfg.report.to, run_dir, log, cfg.report.dir, cfg.report.project)
                if cfg.report.to and leader else None)
    reporter = (RunFolderReporter(run_dir, log, pid=int(launcher) if launcher else None, trackers=trackers) if leader
                else LogReporter(log))
    failed = _failed if leader else _rank_failed
    # Started before the MLX stack loads, and reported after: a failing inhibitor has
    # exited by then, so its reason costs the run no wait. Our launcher holds the inhibitor
    # for the ranks it starts; a rank under mlx.launch keeps its own host awake.
    wants_awake = cfg.training.prevent_sleep and not launcher
    awake = KeepAwake.start(f"training {run_dir.name}") if wants_awake else None
    try:
        # The MLX stack is imported only now, inside the guard: config errors above are
        # reported without paying for it, and a broken install fails the run with its reason.
        from trainer.checkpoints import SaveError
        from trainer.data import DataError
        from trainer.loop import TrainingError, prepare, train
        from trainer.memory import DoesNotFit
        from trainer.model import ModelError
    except Exception as exc:  # noqa: BLE001 - an install problem; the traceback goes to the log
        log(traceback.format_exc().rstrip())
        if awake is not None:
            awake.release()
        return failed(run_dir, log, f"cannot load the training stack: {describe(exc)}", ExitCode.ERROR)
    if awake is not None:
        awake.report(log)
    elif not launcher:
        log("sleep is not prevented: training.prevent_sleep = false")
    try:
        team = None
        if rank is not None:
            from trainer.team import join

            team = join(backend)
            log(f"rank {team.rank} of {team.size} ({backend} backend)")
            if team.leader and team.pids:
                write_status(run_dir, **{RANK_PIDS: list(team.pids)})
        if resuming and rank is None:  # a launcher tidies before it starts the ranks
            _tidy_before_resume(folder, ckpt, log)
        if team is not None and not team.leader:
            team.barrier()  # rank 0 builds or fetches the model first; the others then read it
        prep = prepare(cfg, log, force=force, team=team)
        if team is not None and team.leader:
            team.barrier()
        if not resuming and leader:
            cfg = replace_value(cfg, "model.resolved_path", str(prep.resolved_path))
            dump_toml(cfg, folder.config)
        outcome: dict = {}  # early stop details for the final status event
        state = train(run_dir, cfg, prep, reporter, stop, ckpt, outcome, team)
    except (DataError, ModelError, ConfigError, DoesNotFit) as exc:
        return failed(run_dir, log, str(exc), ExitCode.BAD_INPUT)
    except (TrainingError, SaveError) as exc:
        return failed(run_dir, log, str(exc), ExitCode.ERROR)
    except OSError as exc:  # a full disk or a folder made read-only under the run
        log(traceback.format_exc().rstrip())
        return failed(run_dir, log, f"{exc.filename or run_dir}: {exc.strerror or exc}", ExitCode.ERROR)
    except KeyboardInterrupt:
        log(f"stopped at once by a second {stop.reason or 'signal'}; the last checkpoint is kept")
        if leader:
            write_status(run_dir, state=RunState.STOPPED, ended_at=time.time())
        return ExitCode.STOPPED
    except Exception as exc:  # anything unexpected: full traceback in the log, one line out
        log(traceback.format_exc().rstrip())
        return failed(run_dir, log, describe(exc), ExitCode.ERROR)
    finally:
        if awake is not None:
            awake.release()  # the run is over: nothing more to keep the machine awake for
        reporter.close()
        log.close()
    if not leader:  # a clean end either way: mpirun would abort rank 0's save on a non-zero exit
        return ExitCode.OK
    write_status(run_dir, state=state, ended_at=time.time())
    _event(run_dir, state, **outcome)
    if state == RunState.STOPPED:
        print(f"stopped by {stop.reason}; resume with: {PROG} --resume {run_dir}", file=sys.stderr, flush=True)
        return ExitCode.STOPPED
    return ExitCode.OK


def _tidy_before_resume(folder: RunFolder, ckpt: Path | None, log: RunLog) -> None:
    """What a killed trainer left behind, put right before training again. This process
    holds the run's lock, so nothing here can belong to a live trainer."""
    leftovers = folder.checkpoint_leftovers()
    for tmp in leftovers:
        shutil.rmtree(tmp, ignore_errors=True)
    if leftovers:
        log(f"removed {len(leftovers)} unfinished checkpoint folder(s) a killed trainer left: "
            + ", ".join(p.name for p in leftovers))
    if ckpt is not None:
        return
    # Nothing to continue from: the run starts over at step 0, and the earlier attempt's
    # metrics must not mix with the new ones (duplicate, unsorted steps; wrong best values).
    earlier = [p for p in (folder.metrics, folder.summary, folder.adapters, folder.tensorboard) if p.exists()]
    if not earlier:
        log("no checkpoint to resume from: starting at step 0")
        return
    kept = folder.next_attempt()
    kept.mkdir()
    for path in earlier:
        path.rename(kept / path.name)
    log(f"no checkpoint to resume from: starting over at step 0; the earlier attempt's "
        f"{', '.join(p.name for p in earlier)} are kept in {kept.name}/")


def _event(run_dir: Path, state: str, **extra) -> None:
    step = (read_status(run_dir) or {}).get("step", 0)
    with MetricsWriter(RunFolder(run_dir).metrics) as writer:
        writer.write("status", step, state=str(state), **extra)


def _rank_failed(run_dir: Path, log, message: str, code: int) -> int:
    """A rank other than 0 fails: its log and stderr say why; the launcher records it."""
    log(failure_line(message))
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return code


def _failed(run_dir: Path, log, message: str, code: int) -> int:
    """Record a failure everywhere that still takes it. On a full disk some of these writes
    fail too; the status is written first and has its own fallback, and nothing here may
    raise over the message the user needs."""
    log(failure_line(message))
    for record in (lambda: write_status(run_dir, state=RunState.FAILED, error=message, ended_at=time.time()),
                   lambda: _event(run_dir, RunState.FAILED, error=message)):
        try:
            record()
        except OSError:
            pass
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
