"""Time from a key press to a screen's first full paint, in the real app in a pseudo-terminal.

The app runs as it would over SSH: a child process on a pty of a fixed size, writing escape
codes that this script reads. For each screen the script waits until the app shows where the
key press starts from, lets the output settle, writes the key and stamps the time, then reads
until every marker of the new screen has appeared in the output written after the key: that
moment is the first full paint (Textual writes a whole frame in one go, so the last marker
arrives with the frame that holds all of them).

Screens: the preset editor (Enter on the demo preset), the runs list (F3), a run's monitor
(Enter on the newest run in the runs list, until its charts are drawn) and a new run's
monitor (`s` on the demo preset, until the monitor of the run the trainer just created shows). Each sample is a
fresh app on fresh temporary folders. With ``--baseline DIR`` every sample is taken twice,
interleaved: once with the app of another checkout (a `git worktree` or an unpacked
`git archive` of an older commit) and once with this one's.

    python tests/bench/screen_open.py [-n 5] [--size 80x24] [--only SCREEN ...] [--reports 500]
                                      [--baseline DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from trainer.pure.config import load_preset  # noqa: E402
from trainer.pure.events import MetricsWriter  # noqa: E402
from trainer.pure.metrics import LEARNING_RATE, ORPO_METRICS, TOKENS_PER_SECOND  # noqa: E402
from trainer.pure.run_folder import RunFolder  # noqa: E402
from trainer.pure.runs import list_runs, read_status, write_status  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
FIXTURE_RUNS = REPO / "tests" / "fixtures" / "runs"
DEMO_ITERS = load_preset(REPO / "presets" / "demo.toml").training.iters
TARGET_MS = 300
# Which timing of which screen the target is for: the two, and a started run's monitor
# counted from the trainer's run folder on (before it the trainer starts its interpreter).
TARGETS = {"preset editor": "", "run monitor": "", "new run": "after the trainer"}
Timing = dict  # milliseconds by part; "" is key press to paint
# What the runs folder holds besides the committed fixture runs: finished runs of this many
# reports each (--reports; the one opened is the newest), as after a few days of experiments.
OTHER_RUNS = 5
REPORTS = 500


class Pty:
    """The real app on a pseudo-terminal, with the output decoded and escape codes removed."""

    def __init__(self, argv: list[str], size: tuple[int, int], env: dict, cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            # Out of any checkout: `python -m` imports from the working folder first, which
            # would run this checkout's app whatever PYTHONPATH says.
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        cols, rows = size
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.text = ""

    def read_for(self, seconds: float) -> str:
        """Read what arrives within `seconds`; returns the new text."""
        new, end = [], time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except OSError:
                    break
                new.append(chunk.decode("utf-8", "replace"))
        text = ANSI.sub("", "".join(new))
        self.text += text
        return text

    def wait_for(self, markers: tuple[str, ...], timeout: float = 30.0, since: str = "") -> float:
        """Read until every marker is in the text read since the call; the moment it is."""
        seen, end = since, time.perf_counter() + timeout
        while time.perf_counter() < end:
            seen += self.read_for(0.002)
            if all(m in seen for m in markers):
                return time.perf_counter()
        missing = [m for m in markers if m not in seen]
        raise SystemExit(f"no paint with {missing} within {timeout:.0f} s; last output:\n{seen[-1500:]}")

    def settle(self, seconds: float = 1.0) -> None:
        """Let start-up work finish (the cursor blinks forever, so the output is never quiet)."""
        self.read_for(seconds)

    def press(self, keys: str) -> float:
        t = time.perf_counter()
        os.write(self.fd, keys.encode())
        return t

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def start_app(app_repo: Path, tmp: Path, size: tuple[int, int]) -> Pty:
    presets = tmp / "presets"
    presets.mkdir(exist_ok=True)
    shutil.copy(REPO / "presets" / "demo.toml", presets / "demo.toml")
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(app_repo), "COLUMNS": str(size[0]),
           "LINES": str(size[1])}
    env.setdefault("HF_HOME", str(tmp / "hf"))
    return Pty([sys.executable, "-m", "tui", "--presets", str(presets), "--runs-dir", str(tmp / "runs")], size, env, tmp)


def write_run(runs: Path, name: str, reports: int, started_at: float) -> Path:
    """A finished run shaped like the demo's: a train report every step with every metric
    the monitor charts, a validation and two samples every 50 steps."""
    run = RunFolder(runs / name)
    run.root.mkdir(parents=True)
    run.config.write_text((REPO / "presets" / "demo.toml").read_text())
    run.log.write_text("".join(f"step {s}: loss {math.exp(-s / 300):.4f}\n" for s in range(1, reports + 1)))
    with MetricsWriter(run.metrics) as w:
        for step in range(1, reports + 1):
            values = {m: math.exp(-step / 300) + math.sin(step) * 0.05 for m in ORPO_METRICS}
            w.write("train", step, time=started_at + step, **{**values, LEARNING_RATE: 1e-3, TOKENS_PER_SECOND: 900.0},
                    pairs_per_second=2.0, peak_memory_gb=0.4)
            if step % 50 == 0:
                w.write("val", step, time=started_at + step + 0.5, **values, val_time=0.2)
                for i in range(2):
                    w.write("sample", step, time=started_at + step + 0.6, prompt=f"prompt {i}",
                            completion=f"answer {i} at step {step}", index=i)
    write_status(run.root, state="completed", step=reports, total_steps=reports, started_at=started_at,
                 ended_at=started_at + reports + 1)
    return run.root


@dataclass
class Runs:
    """The runs folder every sample starts from a copy of: the fixture runs and OTHER_RUNS
    generated ones of `reports` reports each, made once."""

    path: Path
    reports: int

    @classmethod
    def make(cls, path: Path, reports: int) -> Runs:
        shutil.copytree(FIXTURE_RUNS, path)
        for i in range(OTHER_RUNS):
            write_run(path, f"20260101-0{i}0000-demo-{i}", reports, started_at=1767225600.0 + 3600 * i)
        return cls(path, reports)

    def copy_to(self, runs: Path) -> Path:
        """A copy at `runs`; returns its newest run, which the runs list shows first."""
        shutil.copytree(self.path, runs)
        return list_runs(runs)[0]


# ---------------------------------------------------------------------------- screens


def preset_editor(app_repo: Path, size: tuple[int, int], runs: Runs) -> Timing:
    """Enter on the demo preset in the list, until the editor's form and footer are painted
    (the runs folder stays empty)."""
    with tempfile.TemporaryDirectory(prefix="orpo-tui-bench-") as tmp:
        app = start_app(app_repo, Path(tmp), size)
        try:
            app.wait_for(("builtin:tiny",))  # the preset list with the demo row
            app.settle()
            t0 = app.press("\r")
            t1 = app.wait_for(("Edit preset", "description", "model.path", "Save"))
            return {"": (t1 - t0) * 1000}
        finally:
            app.close()


def runs_list(app_repo: Path, size: tuple[int, int], runs: Runs) -> Timing:
    """F3 from the preset list, until the runs list shows its newest run (its numbers may
    follow: the list reads long runs' metrics in the background)."""
    with tempfile.TemporaryDirectory(prefix="orpo-tui-bench-") as tmp:
        newest = runs.copy_to(Path(tmp) / "runs")
        app = start_app(app_repo, Path(tmp), size)
        try:
            app.wait_for(("builtin:tiny",))
            app.settle()
            t0 = app.press("\x1bOR")  # F3
            t1 = app.wait_for(("Runs", newest.name))
            return {"": (t1 - t0) * 1000}
        finally:
            app.close()


def run_monitor(app_repo: Path, size: tuple[int, int], runs: Runs) -> Timing:
    """Enter on the newest run in the runs list (F3), until its monitor shows its charts:
    the titles, which a chart only has once it is drawn from the run's metrics."""
    with tempfile.TemporaryDirectory(prefix="orpo-tui-bench-") as tmp:
        newest = runs.copy_to(Path(tmp) / "runs")
        app = start_app(app_repo, Path(tmp), size)
        try:
            app.wait_for(("builtin:tiny",))
            app.press("\x1bOR")  # F3
            app.wait_for((newest.name,))
            # The list reads the long runs' metrics in the background (about 0.5 s a
            # 10k-report run here, twice: the numbers, then the summary): let it finish.
            app.settle(2.0 + OTHER_RUNS * runs.reports / 10_000)
            t0 = app.press("\r")
            t1 = app.wait_for(("Monitor", "loss / NLL", "log-odds", "rewards", "samples at step"))
            return {"": (t1 - t0) * 1000}
        finally:
            app.close()


def new_run(app_repo: Path, size: tuple[int, int], runs: Runs) -> Timing:
    """`s` on the demo preset in the list (the runs folder holding the runs `run_monitor`
    opens among), until the monitor of the run it started shows. The trainer is killed then:
    what follows is its own time to load and train, not the app's. Split at the moment the
    trainer created the run (status.json's started_at, written just before it tells the app
    its folder): before it, the trainer's start-up; after it, the app's work."""
    with tempfile.TemporaryDirectory(prefix="orpo-tui-bench-") as tmp:
        folder = Path(tmp) / "runs"
        runs.copy_to(folder)
        before = set(list_runs(folder))
        app = start_app(app_repo, Path(tmp), size)
        started: list[Path] = []
        try:
            app.wait_for(("builtin:tiny",))
            app.press("\t")  # from the filter box to the list, where `s` starts a run
            app.settle()
            wall0, t0 = time.time(), app.press("s")
            # Its title and its status line's "step N/<iters>". Not "waiting for data": a
            # monitor that comes late (the old app behind a folder of long runs) has data.
            t1 = app.wait_for(("Monitor", f"/{DEMO_ITERS}"))
            started = sorted(set(list_runs(folder)) - before)
            created = [(read_status(run) or {}).get("started_at") for run in started]
            total = (t1 - t0) * 1000
            if len(created) != 1 or not created[0]:
                return {"": total}
            trainer = (created[0] - wall0) * 1000
            return {"": total, "the trainer": trainer, "after the trainer": total - trainer}
        finally:
            app.close()
            for run in started or set(list_runs(folder)) - before:
                pid = (read_status(run) or {}).get("pid")
                if pid:
                    try:
                        os.killpg(pid, signal.SIGKILL)  # the trainer runs in its own session
                    except ProcessLookupError:
                        pass


SCREENS: dict[str, Callable[[Path, tuple[int, int], Runs], Timing]] = {
    "preset editor": preset_editor, "runs list": runs_list, "run monitor": run_monitor, "new run": new_run,
}


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples):>10.0f} {min(samples):>8.0f}   " + " ".join(f"{s:.0f}" for s in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="samples per screen, each in a fresh app (default 5)")
    parser.add_argument("--size", default="80x24", help="terminal size COLSxROWS (default 80x24)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCREENS), metavar="SCREEN", help="these screens only")
    parser.add_argument("--baseline", type=Path, help="another checkout whose app is timed too, interleaved")
    parser.add_argument("--reports", type=int, default=REPORTS,
                        help=f"reports in each generated run, the one opened among them (default {REPORTS})")
    args = parser.parse_args()
    template = tempfile.TemporaryDirectory(prefix="orpo-tui-bench-runs-")
    runs = Runs.make(Path(template.name) / "runs", args.reports)
    size = tuple(int(x) for x in args.size.split("x"))
    apps = {"baseline": args.baseline.resolve(), "this": REPO} if args.baseline else {"this": REPO}
    print(f"key press -> first full paint, real app in a {args.size} pty, N={args.n} fresh apps per screen, "
          f"runs of {args.reports} reports" + (f", interleaved with {apps['baseline']}" if args.baseline else ""))
    print(f"{'screen':<20} {'app':<9} {'median ms':>10} {'min ms':>8}   samples (ms)")
    missed = []
    for name, measure in SCREENS.items():
        if args.only and name not in args.only:
            continue
        samples: dict[tuple[str, str], list[float]] = {}  # (part, app) -> ms
        for _ in range(args.n):
            for label, repo in apps.items():
                for part, ms in measure(repo, size, runs).items():
                    samples.setdefault((part, label), []).append(ms)
        for part in dict.fromkeys(part for part, _ in samples):
            for label in apps:
                if (part, label) in samples:
                    print(f"{'  ' + part if part else name:<20} {label:<9} {summary(samples[part, label])}")
        target = samples.get((TARGETS.get(name), "this"))
        if target and statistics.median(target) > TARGET_MS:
            missed.append(f"{name} {TARGETS[name]}".strip())
    if missed:
        print(f"over the {TARGET_MS} ms target (median): {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
