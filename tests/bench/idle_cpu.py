"""CPU use of the app while it sits idle, tailing a live run (target: under 2% of one core).

Starts a real ``--log-only`` training run detached, then the real ``orpo-tui`` twice in a
160x48 pseudo-terminal (as a user over SSH): once on the live run's monitor (F3, Enter,
each checked on screen), once on the runs list. After a warm-up, it samples each app's utime+stime from
``/proc/<pid>/stat`` over a window and prints CPU % of one core, with the number of train
events the run wrote in that window.

    python bench/idle_cpu.py [--warmup 5] [--window 20]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_PCT = 2.0

F3, ENTER = b"\x1bOR", b"\r"  # the bytes an xterm sends for these keys


def start_app_in_pty(presets: Path, runs: Path) -> tuple[subprocess.Popen, int, bytearray]:
    """The real `orpo-tui` in a pseudo-terminal of 160x48, as over SSH: a headless test
    harness has its own polling and would measure that instead of the app."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    app = subprocess.Popen(
        [sys.executable, "-m", "tui", "--presets", str(presets), "--runs-dir", str(runs)],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )
    os.close(slave)
    screen = bytearray()

    def drain() -> None:  # a terminal must read what the app writes, or the app blocks
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    threading.Thread(target=drain, daemon=True).start()
    return app, master, screen


def wait_for(screen: bytearray, text: bytes, timeout: float) -> bool:
    start = len(screen)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in screen[start:]:
            return True
        time.sleep(0.1)
    return False


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
    app, master, screen = start_app_in_pty(presets, runs)
    try:
        if not wait_for(screen, b"Preset", 30):
            raise RuntimeError("the app did not draw its preset list")
        os.write(master, F3)
        if not wait_for(screen, b"Runs", 10):
            raise RuntimeError("F3 did not open the runs list")
        if open_monitor:
            time.sleep(1.0)
            os.write(master, ENTER)
            if not wait_for(screen, b"Monitor", 10):
                raise RuntimeError("enter did not open the monitor")
        time.sleep(warmup)
        hz = os.sysconf("SC_CLK_TCK")
        e0, t0, c0 = count_train(metrics), time.monotonic(), cpu_ticks(app.pid)
        time.sleep(window)
        c1, t1, e1 = cpu_ticks(app.pid), time.monotonic(), count_train(metrics)
        return 100.0 * (c1 - c0) / hz / (t1 - t0), e1 - e0
    finally:
        app.kill()
        app.wait()
        os.close(master)


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
