"""The hosts of a distributed run: an `mlx.launch` hostfile, read and checked, and what each
rank on those hosts is started with (pure: no mlx, no subprocess).

A hostfile is what `mlx.distributed_config --output-hostfile F` writes and `mlx.launch
--hostfile F` reads: either a list of hosts or an object

    {"backend": "ring", "envs": ["KEY=VALUE", ...],
     "hosts": [{"ssh": "mac1", "ips": ["10.0.0.1"], "rdma": [null, "rdma_en3"]}, ...]}

One rank per entry, in order (a host listed twice runs two ranks). `ssh` is the name to ssh
into; `ips` are the addresses the ring backend connects over; `rdma` (JACCL over Thunderbolt)
names, for each peer, this host's RDMA device that reaches it (null for itself).

The ranks get the environment `mlx.launch` would give them: `MLX_RANK`; for ring,
`MLX_HOSTFILE` naming a file with every rank's `ip:port` list; for JACCL,
`MLX_JACCL_COORDINATOR` (host 0's first IP) and `MLX_IBV_DEVICES` naming a file with the
`rdma` matrix (and `MLX_JACCL_RING=1` for jaccl-ring); MPI ranks are started by one
`mpirun --hostfile` with a slot per entry.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["HostfileError", "Host", "Hostfile", "read_hostfile", "parse_hostfile", "LAUNCH_BACKENDS",
           "launch_backend", "init_backend", "ring_addresses", "jaccl_setup", "mpi_hostfile_text",
           "check_for_backend", "remote_script", "ssh_argv", "SSH_OPTIONS", "LOCAL_NAMES", "is_local",
           "RING_FIRST_PORT", "JACCL_PORT", "envs_dict"]

# What mlx.launch accepts in a hostfile's "backend" (nccl is for CUDA machines, not Macs).
LAUNCH_BACKENDS = ("ring", "mpi", "jaccl", "jaccl-ring")
# mlx.launch's defaults: the ring listens from this port up (one per rank and IP); the JACCL
# coordinator on host 0 listens on it.
RING_FIRST_PORT = 32323
JACCL_PORT = 32323
# No password prompt can hang a launch or a check: a host without key access fails at once.
SSH_OPTIONS = ("-o", "BatchMode=yes")
# Names that are this machine whatever it is called.
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})


class HostfileError(Exception):
    """A hostfile that cannot be used, said in one line naming the file."""


@dataclass(frozen=True)
class Host:
    ssh: str
    ips: tuple[str, ...] = ()
    rdma: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Hostfile:
    path: str
    hosts: tuple[Host, ...]
    backend: str = ""  # the file's own choice ("" when it makes none)
    envs: tuple[str, ...] = field(default=())

    @property
    def size(self) -> int:
        return len(self.hosts)

    def describe(self, rank: int) -> str:
        """How a problem line names a rank's host."""
        return f"host {rank} ({self.hosts[rank].ssh})"


def read_hostfile(path: str | Path) -> Hostfile:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HostfileError(f"{path}: no such hostfile") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HostfileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_hostfile(text, str(path))


def parse_hostfile(text: str, name: str) -> Hostfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HostfileError(f"{name}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    backend, envs = "", []
    if isinstance(data, dict):
        if "hosts" not in data:
            raise HostfileError(f'{name}: no "hosts" list (an mlx.launch hostfile is a list of hosts, '
                                'or an object with "hosts")')
        backend, envs, data = data.get("backend", ""), data.get("envs", []), data["hosts"]
        if backend is None:
            backend = ""
        if not isinstance(backend, str) or (backend and backend not in LAUNCH_BACKENDS):
            raise HostfileError(f'{name}: "backend": {backend!r} is not one of {", ".join(LAUNCH_BACKENDS)}')
        if not isinstance(envs, list) or not all(isinstance(e, str) and "=" in e and e.split("=", 1)[0] for e in envs):
            raise HostfileError(f'{name}: "envs": must be a list of "NAME=VALUE" strings')
    if not isinstance(data, list):
        raise HostfileError(f"{name}: must be a list of hosts or an object with a \"hosts\" list, not {type(data).__name__}")
    if not data:
        raise HostfileError(f"{name}: lists no hosts")
    return Hostfile(name, tuple(_host(item, i, name) for i, item in enumerate(data)), backend, tuple(envs))


def _host(item: Any, i: int, name: str) -> Host:
    where = f"{name}: host {i}"
    if not isinstance(item, dict):
        raise HostfileError(f'{where}: must be an object like {{"ssh": "name", "ips": ["10.0.0.1"]}}')
    ssh = item.get("ssh")
    if not isinstance(ssh, str) or not ssh.strip():
        raise HostfileError(f'{where}: "ssh": must name the host to ssh into')
    ips = item.get("ips", [])
    if not isinstance(ips, list) or not all(isinstance(ip, str) and ip for ip in ips):
        raise HostfileError(f'{where} ({ssh}): "ips": must be a list of IP addresses')
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise HostfileError(f'{where} ({ssh}): "ips": {ip!r} is not an IP address') from None
    rdma = item.get("rdma", [])
    if not isinstance(rdma, list) or not all(d is None or isinstance(d, str) or
                                             (isinstance(d, list) and all(isinstance(x, str) for x in d)) for d in rdma):
        raise HostfileError(f'{where} ({ssh}): "rdma": must be a list of RDMA device names or nulls')
    return Host(ssh.strip(), tuple(ips), tuple(tuple(d) if isinstance(d, list) else d for d in rdma))


# ---------------------------------------------------------------------------- backends


def launch_backend(hostfile: Hostfile, requested: str) -> str:
    """The backend for a hostfile run: one asked for by name (--backend, distributed.backend),
    else the file's, else ring (mlx.launch's default on a Mac)."""
    if requested in LAUNCH_BACKENDS:
        return requested
    return hostfile.backend or "ring"


def init_backend(launch: str) -> str:
    """What the ranks pass to mx.distributed.init for a launch backend."""
    return "jaccl" if launch.startswith("jaccl") else launch


def check_for_backend(hostfile: Hostfile, backend: str) -> list[str]:
    """What in the file keeps `backend` from starting its ranks: one line each."""
    n, hosts, out = hostfile.size, hostfile.hosts, []
    if backend == "ring" and n > 1:
        out += [f"{hostfile.path}: {hostfile.describe(i)}: no \"ips\": the ring backend connects over IP addresses "
                "(mlx.distributed_config writes them)" for i, h in enumerate(hosts) if not h.ips]
    if backend.startswith("jaccl"):
        if not hosts[0].ips:
            out.append(f"{hostfile.path}: {hostfile.describe(0)}: no \"ips\": JACCL's coordinator is host 0's first IP")
        for i, h in enumerate(hosts):
            if len(h.rdma) != n:
                out.append(f"{hostfile.path}: {hostfile.describe(i)}: \"rdma\" lists {len(h.rdma)} devices; "
                           f"JACCL needs one per host ({n}), null for itself")
            elif h.rdma[i] is not None:
                out.append(f"{hostfile.path}: {hostfile.describe(i)}: \"rdma\" entry {i} (itself) must be null")
            else:
                peers = ((i - 1) % n, (i + 1) % n) if backend == "jaccl-ring" else range(n)
                out += [f"{hostfile.path}: {hostfile.describe(i)}: no RDMA device to host {j} ({hosts[j].ssh})"
                        for j in peers if j != i and h.rdma[j] is None]
    return out


def ring_addresses(ips_per_rank: Iterable[Iterable[str]], ports: Iterable[int]) -> str:
    """The ring backend's MLX_HOSTFILE content: for each rank an `ip:port` per IP, the ports
    taken in rank then IP order (mlx.launch counts them up from RING_FIRST_PORT)."""
    it = iter(ports)
    return json.dumps([[f"{ip}:{next(it)}" for ip in ips] for ips in ips_per_rank])


def jaccl_setup(hostfile: Hostfile, backend: str, port: int = JACCL_PORT) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, files) for JACCL ranks: files maps an environment variable to the text
    of the file it must name."""
    env = {"MLX_JACCL_COORDINATOR": f"{hostfile.hosts[0].ips[0]}:{port}"}
    if backend == "jaccl-ring":
        env["MLX_JACCL_RING"] = "1"
    devices = [[list(d) if isinstance(d, tuple) else d for d in h.rdma] for h in hostfile.hosts]
    return env, {"MLX_IBV_DEVICES": json.dumps(devices)}


def mpi_hostfile_text(hostfile: Hostfile) -> str:
    """OpenMPI's hostfile: each host once, with a slot per rank it runs."""
    return "".join(f"{name} slots={n}\n" for name, n in Counter(h.ssh for h in hostfile.hosts).items())


def envs_dict(hostfile: Hostfile) -> dict[str, str]:
    return dict(e.split("=", 1) for e in hostfile.envs)


# ---------------------------------------------------------------------------- this machine and ssh


def is_local(name: str, local_names: frozenset[str] | set[str]) -> bool:
    """Whether a host name or address is this machine (`local_names`: its names and the
    addresses of its interfaces); any 127.x address is."""
    if name in LOCAL_NAMES or name in local_names:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def remote_script(cwd: str, env: dict[str, str], files: dict[str, str], argv: list[str]) -> str:
    """The shell line a remote rank runs: first it prints its pid (the launcher signals the
    rank through it: `ssh HOST kill -INT PID`), then moves to the launcher's folder when the
    host has it, sets the environment, writes each file of `files` to a temporary file named
    by its variable, and becomes the rank."""
    parts = ["echo $$", f"cd {shlex.quote(cwd)} 2>/dev/null || true"]
    parts += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    for name, content in files.items():
        parts += [f"{name}=$(mktemp)", f"printf %s {shlex.quote(content)} > \"${name}\"", f"export {name}"]
    parts.append("exec " + shlex.join(argv))
    return "; ".join(parts)


def ssh_argv(host: str, command: str, connect_timeout: float | None = None) -> list[str]:
    timeout = ["-o", f"ConnectTimeout={max(1, round(connect_timeout))}"] if connect_timeout else []
    return ["ssh", *SSH_OPTIONS, *timeout, host, command]
