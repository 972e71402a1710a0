"""Running the real `orpo-train` as a subprocess, the way the app and users do."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from trainer.pure.events import read_events

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "presets" / "demo.toml"
ORPO_TRAIN = [sys.executable, "-m", "trainer"]


def run_trainer(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*ORPO_TRAIN, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def start_trainer(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*ORPO_TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def first_line(proc: subprocess.Popen) -> Path:
    return Path(proc.stdout.readline().strip())


def train_steps(run_dir: Path) -> list[int]:
    return [e["step"] for e in read_events(run_dir / "metrics.jsonl") if e["event"] == "train"]


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").exists() and max(train_steps(run_dir), default=0) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError(f"no train event for step {step} within {timeout}s")
