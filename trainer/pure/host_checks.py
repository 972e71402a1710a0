"""Whether the hosts of a hostfile can train a run together: what each host is asked (one
probe, run by the same python path there), and the one line per problem that its answer,
compared with this machine, gives (pure: no subprocess, no mlx).

Every rank runs `PYTHON -m trainer` with this machine's python path, imports the same MLX,
and reads the model and dataset at the paths this machine's config names, so each of those
must be the same there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trainer.pure.hostfile import Hostfile

__all__ = ["PROBE", "probe_argv", "PACKAGES", "Expected", "Answer", "answer_from", "problem_lines", "SSH_FAILED",
           "NOT_FOUND"]

PACKAGES = ("mlx", "mlx-lm")
SSH_FAILED = 255  # ssh's own exit code when it cannot connect or log in
NOT_FOUND = 127  # a shell's exit code for a command it cannot find
# Run as `PYTHON -c PROBE PATH...`: one JSON line. Standard library only, nothing imported
# that costs time (versions come from the installed metadata, not from importing mlx).
PROBE = r"""
import json, os, sys
PACKAGES = sys.argv[1].split(",")

from importlib import metadata, util
def version(name):
    try:
        return metadata.version(name)
    except Exception:
        return None
print(json.dumps({"python": sys.executable,
                  "versions": {n: version(n) for n in PACKAGES},
                  "trainer": util.find_spec("trainer") is not None,
                  "paths": {p: os.path.exists(os.path.expanduser(p)) for p in sys.argv[2:]}}))
"""


def probe_argv(python: str, paths: Sequence[str]) -> list[str]:
    return [python, "-c", PROBE, ",".join(PACKAGES), *paths]


@dataclass(frozen=True)
class Expected:
    """This machine's side of the comparison."""

    python: str
    versions: Mapping[str, str | None]
    paths: Mapping[str, str] = field(default_factory=dict)  # what it is (e.g. "model.path") -> the path
    batch_size: int | None = None


@dataclass(frozen=True)
class Answer:
    """What one host said: `error` when it said nothing usable."""

    error: str | None = None
    report: Mapping | None = None


def answer_from(returncode: int, stdout: str, stderr: str, python: str, via_ssh: bool) -> Answer:
    """Read a probe's outcome: ssh failing, the python path missing, or the JSON line."""
    last = _last_line(stderr)
    if via_ssh and returncode == SSH_FAILED:
        return Answer(f"not reachable over ssh in batch mode{': ' + last if last else ''} "
                      "(passwordless ssh with a key is needed)")
    if returncode == NOT_FOUND or "No such file or directory" in last and not stdout.strip():
        return Answer(f"no python at {python} (every host needs the same python path)")
    for line in reversed(stdout.splitlines()):
        if line.strip().startswith("{"):
            try:
                return Answer(report=json.loads(line))
            except json.JSONDecodeError:
                break
    return Answer(f"the probe with {python} failed (exit {returncode}){': ' + last if last else ''}")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def problem_lines(hostfile: Hostfile, answers: Mapping[str, Answer], expected: Expected) -> list[str]:
    """One line per problem, each naming the host (its first rank) and what is wrong there.
    `answers` is keyed by ssh name (a host listed twice is asked once)."""
    out: list[str] = []
    world = hostfile.size
    if expected.batch_size is not None and expected.batch_size % world:
        out.append(f"{hostfile.path}: training.batch_size = {expected.batch_size} does not divide evenly across "
                   f"the {world} hosts' ranks; choose a multiple of {world}")
    seen: set[str] = set()
    for rank, host in enumerate(hostfile.hosts):
        if host.ssh in seen:
            continue
        seen.add(host.ssh)
        who = f"{hostfile.path}: {hostfile.describe(rank)}"
        answer = answers.get(host.ssh, Answer("not checked"))
        if answer.error:
            out.append(f"{who}: {answer.error}")
            continue
        report = answer.report or {}
        if not report.get("trainer"):
            out.append(f"{who}: {expected.python} cannot import orpo-tui's trainer (install the same checkout "
                       "at the same path)")
        versions = report.get("versions") or {}
        for name in PACKAGES:
            here, there = expected.versions.get(name), versions.get(name)
            if there is None:
                out.append(f"{who}: {name} is not installed for {expected.python} ({here or 'none'} here)")
            elif there != here:
                out.append(f"{who}: {name} {there} there, {here or 'none'} here (every rank must run the same version)")
        present = report.get("paths") or {}
        for what, path in expected.paths.items():
            if not present.get(path, False):
                out.append(f"{who}: {what} {path} is missing there (every rank reads it at the same path)")
    return out
