"""CPU use of the app while it sits idle, tailing a live run (target: under 2% of one core).

Starts a real ``--log-only`` training run detached, then two headless app processes in
turn: one that opens the runs list (F3) and the live run's monitor (Enter), one that only
opens the runs list. After a warm-up, it samples each app's utime+stime from
``/proc/<pid>/stat`` over a window and prints CPU % of one core, with the number of train
events the run wrote in that window.

    python bench/idle_cpu.py [--warmup 5] [--window 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_PCT = 2.0

APP_SNIPPET = """
import asyncio, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tui.app import make_app

app = make_app(Path({presets!r}), Path({runs!r}))

async def main():
    async with app.run_test(headless=True, size=(160, 48)) as pilot:
        await pilot.press("f3")
        await pilot.pause(1)
        if {open_monitor!r}:
            await pilot.press("enter")
        print("ready", flush=True)
        await asyncio.sleep({duration!r})

asyncio.run(main())
"""


def cpu_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def count_train(metrics: Path) -> int:
    n = 0
    try:
        with metrics.open("rb") as fh:
            for line in fh:
                try:
                    if json.loads(line).get("event") == "train":
                        n += 1
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return n


def measure(presets: Path, runs: Path, metrics: Path, open_monitor: bool, warmup: float, window: float):
    code = APP_SNIPPET.format(
        root=str(ROOT), presets=str(presets), runs=str(runs),
        open_monitor=open_monitor, duration=warmup + window + 30.0,
    )
    app = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = app.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"app did not start (exit {app.poll()})")
        time.sleep(warmup)
        hz = os.sysconf("SC_CLK_TCK")
        e0, t0, c0 = count_train(metrics), time.monotonic(), cpu_ticks(app.pid)
        time.sleep(window)
        c1, t1, e1 = cpu_ticks(app.pid), time.monotonic(), count_train(metrics)
        return 100.0 * (c1 - c0) / hz / (t1 - t0), e1 - e0
    finally:
        app.kill()
        app.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=20.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="orpo-idle-"))
    presets, runs = tmp / "presets", tmp / "runs"
    presets.mkdir()
    runs.mkdir()
    preset = presets / "demo.toml"
    shutil.copy(ROOT / "presets" / "demo.toml", preset)

    trainer = subprocess.Popen(
        [sys.executable, "-m", "trainer", str(preset), "--runs-dir", str(runs), "--log-only",
         "--set", "training.iters=100000", "--set", "training.steps_per_eval=0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    try:
        run_dir = Path(trainer.stdout.readline().strip())
        metrics = run_dir / "metrics.jsonl"
        rows = []
        for label, monitor in (("monitor (live run)", True), ("runs list", False)):
            pct, events = measure(presets, runs, metrics, monitor, args.warmup, args.window)
            rows.append((label, pct, events))
        if trainer.poll() is not None:
            print(f"warning: trainer exited early ({trainer.returncode})")
    finally:
        try:
            os.killpg(trainer.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        trainer.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"idle CPU over {args.window:.0f} s after {args.warmup:.0f} s warm-up "
          f"(target < {TARGET_PCT:.0f}% of one core)")
    print(f"{'screen':<20} {'CPU %':>7} {'train events':>13}")
    for label, pct, events in rows:
        print(f"{label:<20} {pct:>7.2f} {events:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
