"""`orpo-train check-hosts HOSTFILE [--preset P] [--set ...]`: whether the hosts of an mlx.launch
hostfile can train together, one line per problem (trainer.pure.host_checks says which).

Hosts that are this machine (its names, 127.x, the addresses of its interfaces) are probed
by running the probe here; the others over `ssh -o BatchMode=yes -o ConnectTimeout=N`, all
hosts at once. No mlx is imported: the data check of the app runs this too.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from trainer.pure.builtin_names import is_builtin
from trainer.pure.config import Config, ConfigError, apply_overrides, check, load_preset
from trainer.pure.host_checks import PACKAGES, Answer, Expected, answer_from, probe_argv, problem_lines
from trainer.pure.hostfile import (
    Hostfile,
    HostfileError,
    check_for_backend,
    is_local,
    launch_backend,
    read_hostfile,
    ssh_argv,
)
from trainer.pure.sources import looks_local
from trainer.pure.trainer_process import PROG, ExitCode

CONNECT_TIMEOUT_S = 5
PROBE_TIMEOUT_S = 30  # the whole probe on one host, the ssh login included


def local_names() -> set[str]:
    """This machine's names and the addresses of its network interfaces."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            names.update(a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    except Exception:  # noqa: BLE001 - without the interface list, names and loopback still count
        pass
    return names


def installed_versions() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def preset_paths(cfg: Config) -> dict[str, str]:
    """The files every rank reads at this machine's path: the model's folder and the dataset
    (a hub id is looked for in the hub cache, at this machine's cache path)."""
    paths = {}
    for what, spec, kind in (("model.path", cfg.model.path, "models"), ("data.path", cfg.data.path, "datasets")):
        if is_builtin(spec):
            continue
        local = Path(spec).expanduser()
        if local.exists() or looks_local(spec):
            paths[what] = str(local.resolve())
        else:
            cached = _hub_cache_folder(spec, kind)
            if cached is not None:
                paths[f"{what} (hub cache)"] = cached
    return paths


def _hub_cache_folder(repo_id: str, kind: str) -> str | None:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    folder = Path(HF_HUB_CACHE) / f"{kind}--{repo_id.replace('/', '--')}"
    return str(folder) if folder.is_dir() else None


def expected_here(cfg: Config | None) -> Expected:
    return Expected(python=sys.executable, versions=installed_versions(),
                    paths=preset_paths(cfg) if cfg is not None else {},
                    batch_size=cfg.training.batch_size if cfg is not None else None)


def probe(host: str, local: bool, expected: Expected) -> Answer:
    argv = probe_argv(expected.python, list(expected.paths.values()))
    if not local:  # from the same folder, as a rank starts there (a clone's trainer is found from it)
        argv = ssh_argv(host, f"cd {shlex.quote(os.getcwd())} 2>/dev/null; exec {shlex.join(argv)}", CONNECT_TIMEOUT_S)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Answer(f"no answer within {PROBE_TIMEOUT_S} s" + ("" if local else " over ssh"))
    except OSError as exc:
        what = "ssh" if not local else expected.python
        return Answer(f"cannot run {what}: {exc.strerror or exc}")
    return answer_from(done.returncode, done.stdout, done.stderr, expected.python, via_ssh=not local)


def start_problems(hostfile: Hostfile, requested_backend: str, here: set[str]) -> list[str]:
    """What keeps orpo-train, started on this machine, from starting the ranks of `hostfile`:
    rank 0 writes the run folder and must be here; the backend must find what it needs."""
    found = []
    first = hostfile.hosts[0].ssh
    if not is_local(first, here):
        found.append(f"{hostfile.path}: {hostfile.describe(0)} is not this machine: rank 0 writes the run folder, "
                     f"so start {PROG} on {first} (or list this machine first)")
    return found + check_for_backend(hostfile, launch_backend(hostfile, requested_backend))


def check_hosts(hostfile: Hostfile, cfg: Config | None) -> list[str]:
    """The problem lines for `hostfile` (and `cfg`'s model, data, backend and batch size);
    [] when clean."""
    expected = expected_here(cfg)
    here = local_names()
    starting = start_problems(hostfile, cfg.distributed.backend if cfg is not None else "auto", here)
    names = list(dict.fromkeys(h.ssh for h in hostfile.hosts))
    with ThreadPoolExecutor(max_workers=min(len(names), 16)) as pool:
        answers = dict(zip(names, pool.map(lambda n: probe(n, is_local(n, here), expected), names)))
    return starting + problem_lines(hostfile, answers, expected)


def hostfile_lines(cfg: Config) -> list[str] | None:
    """The data check's host lines for a preset: None without a hostfile, [] when every host
    is ready, else one line per problem (a hostfile that cannot be read is one)."""
    if not cfg.distributed.hostfile:
        return None
    try:
        hostfile = read_hostfile(cfg.distributed.hostfile)
    except HostfileError as exc:
        return [str(exc)]
    return check_hosts(hostfile, cfg)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} check-hosts",
                                description="Check that the hosts of an mlx.launch hostfile can train a run together.")
    p.add_argument("hostfile", help="the mlx.launch hostfile (JSON; mlx.distributed_config writes one)")
    p.add_argument("--preset", help="also check this preset's model and dataset paths and batch size on every host")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value (repeatable)")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        hostfile = read_hostfile(args.hostfile)
        cfg = None
        if args.preset:
            cfg = apply_overrides(load_preset(args.preset), args.overrides)
            check(cfg, args.preset)
    except (HostfileError, ConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    problems = check_hosts(hostfile, cfg)
    for line in problems:
        print(line, flush=True)
    if problems:
        return ExitCode.HOSTS_NOT_READY
    what = " and the preset's model, data and batch size" if cfg is not None else ""
    print(f"{hostfile.path}: {hostfile.size} rank(s) on {len({h.ssh for h in hostfile.hosts})} host(s) ready: "
          f"python {sys.executable}, {', '.join(f'{k} {v}' for k, v in expected_here(None).versions.items())}{what}",
          flush=True)
    return ExitCode.OK

