"""No sleep while a run trains: the inhibitor each platform gets, and that it ends with its
holder however the holder dies. macOS is not here, so its branch runs with a stand-in
`caffeinate` on PATH; Linux's runs with the real `cat` behind a stand-in `systemd-inhibit`,
and with the real systemd-inhibit when this machine has one."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_helpers import DEMO, ORPO_TRAIN, REPO, first_line, wait_for_step

from trainer.pure import queue
from trainer.pure.keep_awake import PLATFORM_ENV, inhibitor_for
from trainer.pure.runs import pid_alive, read_status

LONG_RUN = ["--set", "training.iters=500", "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0",
            "--set", "training.save_every=500"]


def fake_which(found: dict):
    return lambda name: found.get(name)


# ---------------------------------------------------------------------------- the argv


def test_macos_holds_an_idle_sleep_assertion_until_the_pid_exits():
    inh = inhibitor_for("darwin", 4242, "training x", fake_which({"caffeinate": "/usr/bin/caffeinate"}))
    assert inh.argv == ("/usr/bin/caffeinate", "-i", "-w", "4242")
    assert inh.name == "caffeinate" and not inh.needs_pipe and inh.available


def test_linux_blocks_sleep_and_idle_until_a_pipe_closes():
    inh = inhibitor_for("linux", 4242, "training 20260101-demo", fake_which({"systemd-inhibit": "/usr/bin/systemd-inhibit"}))
    assert inh.argv == ("/usr/bin/systemd-inhibit", "--what=sleep:idle", "--mode=block", "--who=orpo-tui",
                        "--why=training 20260101-demo", "cat")
    assert inh.name == "systemd-inhibit" and inh.needs_pipe


@pytest.mark.parametrize(("platform", "missing"), [
    ("darwin", "caffeinate not found on PATH"),
    ("linux", "systemd-inhibit not found on PATH"),
    ("win32", "no sleep inhibitor known for Windows"),
    ("freebsd14", "no sleep inhibitor known for freebsd14"),
])
def test_no_inhibitor_says_why(platform, missing):
    inh = inhibitor_for(platform, 1, "x", fake_which({}))
    assert not inh.available and inh.argv == () and inh.missing == missing


# ---------------------------------------------------------------------------- a real trainer


def _stand_in(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# macOS's caffeinate -w PID: records how it was called, then returns once PID is gone.
CAFFEINATE = """echo "$$ $*" >> "$STAND_IN_LOG"
while [ $# -gt 0 ]; do [ "$1" = -w ] && pid=$2; shift; done
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
"""
# systemd-inhibit [--options] COMMAND...: records how it was called, runs the command and
# returns when it does (the real one holds its lock meanwhile).
SYSTEMD_INHIBIT = """echo "$$ $*" >> "$STAND_IN_LOG"
while [ $# -gt 0 ]; do case "$1" in --*) shift;; *) break;; esac; done
"$@"
"""


def _env(tmp_path: Path, platform: str | None) -> dict:
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "STAND_IN_LOG": str(tmp_path / "stand-in.log"), "MLX_DISABLE_COMPILE": "1"}
    if platform:
        env[PLATFORM_ENV] = platform
    return env


def _calls(tmp_path: Path) -> list[tuple[int, str]]:
    log = tmp_path / "stand-in.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [(int(pid), args) for pid, _, args in (ln.partition(" ") for ln in lines)]


def _start(tmp_path: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*ORPO_TRAIN, str(DEMO), "--runs-dir", str(tmp_path / "runs"), *LONG_RUN, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def _holder_line(run_dir: Path) -> str:
    return next(ln for ln in (run_dir / "train.log").read_text().splitlines() if "sleep" in ln)


def test_trainer_holds_caffeinate_which_ends_when_the_trainer_is_sigkilled(tmp_path):
    _stand_in(tmp_path / "bin", "caffeinate", CAFFEINATE)
    proc = _start(tmp_path, _env(tmp_path, "darwin"))
    try:
        run_dir = first_line(proc)
        wait_for_step(run_dir, 1, proc)
        [(held_by, args)] = _calls(tmp_path)
        assert args == f"-i -w {proc.pid}"
        assert pid_alive(held_by)
        # Its own session: neither a Ctrl-C in the trainer's terminal nor the SIGHUP of a
        # dropped SSH link reaches it before the trainer ends.
        assert os.getsid(held_by) == held_by != os.getsid(proc.pid)
        assert re.search(rf"\] sleep prevented while this process lives: caffeinate holds it \(pid {held_by}\)$",
                         _holder_line(run_dir))
    finally:
        proc.kill()
        proc.wait()
    assert _wait_gone(held_by), "caffeinate outlived the SIGKILLed trainer"


def test_linux_inhibitor_ends_with_a_sigkilled_trainer_even_before_it_is_reaped(tmp_path):
    _stand_in(tmp_path / "bin", "systemd-inhibit", SYSTEMD_INHIBIT)
    proc = _start(tmp_path, _env(tmp_path, "linux"))
    try:
        run_dir = first_line(proc)
        wait_for_step(run_dir, 1, proc)
        [(held_by, args)] = _calls(tmp_path)
        assert args == f"--what=sleep:idle --mode=block --who=orpo-tui --why=training {run_dir.name} cat"
        assert "systemd-inhibit holds it" in _holder_line(run_dir)
        proc.send_signal(signal.SIGKILL)
        # Not reaped yet: a zombie still answers kill -0, but its pipe is closed already.
        assert _wait_gone(held_by), "systemd-inhibit outlived the SIGKILLed trainer"
    finally:
        proc.kill()
        proc.wait()


def test_trainer_that_finishes_lets_go_and_prevent_sleep_false_holds_nothing(tmp_path):
    _stand_in(tmp_path / "bin", "caffeinate", CAFFEINATE)
    env = _env(tmp_path, "darwin")
    short = ["--set", "training.iters=2"]
    done = subprocess.run([*ORPO_TRAIN, str(DEMO), "--runs-dir", str(tmp_path / "runs"), *LONG_RUN, *short],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    [(held_by, _)] = _calls(tmp_path)
    assert _wait_gone(held_by, 5)
    off = subprocess.run([*ORPO_TRAIN, str(DEMO), "--runs-dir", str(tmp_path / "off"), *LONG_RUN, *short,
                          "--set", "training.prevent_sleep=false"], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=240)
    assert off.returncode == 0, off.stderr
    assert len(_calls(tmp_path)) == 1  # no second caffeinate
    run_dir = Path(off.stdout.splitlines()[0])
    assert _holder_line(run_dir).endswith("] sleep is not prevented: training.prevent_sleep = false")


def test_no_caffeinate_on_path_is_said_in_train_log(tmp_path):
    env = _env(tmp_path, "darwin")
    env["PATH"] = str(Path(sys.executable).parent)  # the interpreter, and no caffeinate
    proc = _start(tmp_path, env)
    try:
        run_dir = first_line(proc)
        wait_for_step(run_dir, 1, proc)
        assert _holder_line(run_dir).endswith("] sleep is not prevented: caffeinate not found on PATH")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("systemd-inhibit") is None,
                    reason="needs Linux with systemd-inhibit")
def test_real_systemd_inhibit_holds_until_sigkill_or_says_why_not(tmp_path):
    proc = _start(tmp_path, _env(tmp_path, None))
    try:
        run_dir = first_line(proc)
        wait_for_step(run_dir, 1, proc)
        line = _holder_line(run_dir)
        held = re.search(r"systemd-inhibit holds it \(pid (\d+)\)$", line)
        if held is None:
            # No logind on this machine (a container): the reason systemd-inhibit gave.
            assert re.search(r"\] sleep is not prevented: systemd-inhibit exited with \d+: \S", line), line
            return
        pid = int(held.group(1))
        assert pid_alive(pid)
        proc.send_signal(signal.SIGKILL)
        assert _wait_gone(pid), "systemd-inhibit outlived the SIGKILLed trainer"
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------- the queue


def test_queue_runner_holds_one_inhibitor_for_the_whole_queue(tmp_path):
    _stand_in(tmp_path / "bin", "caffeinate", CAFFEINATE)
    runs = tmp_path / "runs"
    tiny = ["training.steps_per_eval=0", "training.save_every=3", "training.iters=3"]
    queue.add(runs, queue.sweep_items(DEMO, {"training.learning_rate": [1e-3, 2e-3]}, overrides=tiny))
    runner = subprocess.run([sys.executable, "-m", "trainer.queue_runner", "run", "--runs-dir", str(runs)],
                            cwd=REPO, env=_env(tmp_path, "darwin"), timeout=300, capture_output=True, text=True)
    assert runner.returncode == 0, runner.stderr
    items = queue.read(runs)["items"]
    assert [it["state"] for it in items] == ["completed", "completed"]
    trainer_pids = [read_status(it["run_dir"])["pid"] for it in items]
    calls = _calls(tmp_path)
    waited_on = [int(args.split()[-1]) for _, args in calls]
    assert len(calls) == 3 and waited_on[1:] == trainer_pids  # the runner's first, then each trainer's
    assert waited_on[0] not in trainer_pids
    assert runner.stdout.count("caffeinate holds it") == 1  # stdout is queue.log when the app starts it
    assert all(_wait_gone(pid, 5) for pid, _ in calls)
