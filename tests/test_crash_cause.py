"""Crashes say why: a run whose trainer died without writing its end shows the last line of
train.log that names the error, or "killed (no error written)"; real trainers killed with
SIGABRT and SIGKILL, seen through `orpo-tui ls --json`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from trainer_helpers import DEMO, ORPO_TRAIN, REPO, first_line, wait_for_step

from trainer.pure.crash_cause import NO_ERROR_WRITTEN, TAIL_BYTES, LogCause, cause_in_text, crash_cause
from trainer.pure.train_log import failure_line, stamped, start_line

METAL_MALLOC = ("libc++abi: terminating due to uncaught exception of type std::runtime_error: "
                "[metal::malloc] Resource limit exceeded")
METAL_COMMAND_BUFFER = ("libc++abi: terminating due to uncaught exception of type std::runtime_error: [METAL] Command "
                        "buffer execution failed: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)")
FAULTHANDLER_DUMP = """Fatal Python error: Aborted

Thread 0x00007f98dce9d6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 331 in wait
  File "/usr/lib/python3.11/errors.py", line 12 in raise_error

Current thread 0x00007f98f8060b80 (most recent call first):
  File "/repo/trainer/loop.py", line 226 in train

Extension modules: numpy._core._multiarray_umath, yaml._yaml (total: 2)
"""


def log_text(*lines: str) -> str:
    return "\n".join([stamped(start_line(123)), stamped("step 10/500: loss 6.2595"), *lines]) + "\n"


# ---------------------------------------------------------------------------- reading a log


def test_sigabrt_is_faulthandlers_line():
    assert cause_in_text(log_text(FAULTHANDLER_DUMP)) == "Fatal Python error: Aborted"


@pytest.mark.parametrize("metal", [METAL_MALLOC, METAL_COMMAND_BUFFER])
def test_a_metal_abort_beats_the_abort_that_follows_it(metal):
    assert cause_in_text(log_text(metal, FAULTHANDLER_DUMP)) == metal


def test_libstdcxx_terminate_gives_its_what_line():
    text = log_text("terminate called after throwing an instance of 'std::runtime_error'",
                    "  what():  [metal::malloc] Resource limit exceeded", FAULTHANDLER_DUMP)
    assert cause_in_text(text) == "what(): [metal::malloc] Resource limit exceeded"
    text = log_text("terminate called after throwing an instance of 'std::bad_alloc'", "  what():  std::bad_alloc")
    assert cause_in_text(text) == "what(): std::bad_alloc"


def test_a_traceback_gives_its_exception_line_the_last_of_a_chain():
    text = log_text("Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "ValueError: first",
                    "", "During handling of the above exception, another exception occurred:", "",
                    "Traceback (most recent call last):", '  File "x.py", line 3, in <module>',
                    "    raise KeyboardInterrupt", "KeyboardInterrupt")
    assert cause_in_text(text) == "KeyboardInterrupt"


def test_printed_error_lines_count_but_not_the_trainers_progress_or_stack_frames():
    assert cause_in_text(log_text("RuntimeError: out of memory", "  File \"errors.py\", line 2")) == \
        "RuntimeError: out of memory"
    # The trainer's own lines may say "error" without being one (a data note, say)...
    assert cause_in_text(log_text(stamped("data: 3 rows had an encoding error and were skipped"))) is None
    assert cause_in_text(log_text(stamped("sleep is not prevented: systemd-inhibit exited with 1: "
                                          "org.freedesktop.DBus.Error.AccessDenied"))) is None
    # ...but its failure line is one (written when the final status could not be).
    failed = stamped(failure_line("status.json: No space left on device"))
    assert cause_in_text(log_text(failed)) == failed


def test_only_the_last_trainers_part_counts():
    earlier = log_text(FAULTHANDLER_DUMP)
    assert cause_in_text(earlier + log_text()) is None  # a resume, killed later without a word
    assert cause_in_text(earlier + log_text(METAL_MALLOC)) == METAL_MALLOC


def test_long_lines_are_folded_and_clipped():
    cause = cause_in_text(log_text("RuntimeError:   " + "x" * 1000))
    assert cause.startswith("RuntimeError: xxx") and len(cause) == 300 and cause.endswith("…")


def test_files_without_an_error(tmp_path):
    assert crash_cause(tmp_path / "missing.log") == NO_ERROR_WRITTEN
    (tmp_path / "train.log").write_text(log_text())
    assert crash_cause(tmp_path / "train.log") == NO_ERROR_WRITTEN
    (tmp_path / "dir" / "train.log").mkdir(parents=True)
    assert crash_cause(tmp_path / "dir" / "train.log") == f"{NO_ERROR_WRITTEN}; train.log cannot be read: Is a directory"


def test_only_the_tail_is_read(tmp_path):
    log = tmp_path / "train.log"
    # An error far from the end is not seen (only TAIL_BYTES are read), and a line cut in
    # two by where the tail starts is not taken for a whole one.
    cut = "x" * 100 + "RuntimeError: cut in two"
    log.write_text("ValueError: far away\n" + "." * (TAIL_BYTES - 10) + "\n")
    assert crash_cause(log) == NO_ERROR_WRITTEN
    log.write_text(cut + "\n" + "." * (TAIL_BYTES - 30) + "\n")
    assert crash_cause(log) == NO_ERROR_WRITTEN
    with log.open("a") as fh:
        fh.write(METAL_MALLOC + "\n")
    assert crash_cause(log) == METAL_MALLOC


def test_cause_is_read_again_only_when_the_log_changes(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(log_text())
    cause = LogCause(log)
    assert [cause.current() for _ in range(5)] == [NO_ERROR_WRITTEN] * 5
    assert cause.reads == 1
    with log.open("a") as fh:
        fh.write(METAL_MALLOC + "\n")
    assert cause.current() == METAL_MALLOC and cause.current() == METAL_MALLOC
    assert cause.reads == 2


# ---------------------------------------------------------------------------- real trainers


def _ls(runs_dir) -> dict:
    out = subprocess.run([sys.executable, "-m", "tui", "ls", "--runs-dir", str(runs_dir), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return {row["run"]: row for row in json.loads(out.stdout)}


def _start(runs_dir, *args: str) -> subprocess.Popen:
    # --log-only, as the app and the queue start trainers: fds 1 and 2 are train.log.
    return subprocess.Popen([*ORPO_TRAIN, *args, "--log-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, "MLX_DISABLE_COMPILE": "1"})


LONG = ["--set", "training.iters=500", "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0",
        "--set", "training.save_every=2"]


def _wait_dead(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == -sig


def test_sigabrt_and_sigkill_show_as_crashed_with_their_cause_in_ls(tmp_path):
    runs = tmp_path / "runs"
    aborted, killed = _start(runs, str(DEMO), "--runs-dir", str(runs), *LONG), None
    try:
        run_a = first_line(aborted)
        time.sleep(1.1)  # the next run folder gets another stamp
        killed = _start(runs, str(DEMO), "--runs-dir", str(runs), *LONG)
        run_k = first_line(killed)
        wait_for_step(run_a, 2, aborted)
        wait_for_step(run_k, 2, killed)
        _wait_dead(aborted, signal.SIGABRT)
        _wait_dead(killed, signal.SIGKILL)
    finally:
        for proc in (aborted, killed):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    rows = _ls(runs)
    assert rows[run_a.name]["state"] == "crashed"
    assert rows[run_a.name]["error"] == "Fatal Python error: Aborted"
    assert "most recent call first" in (run_a / "train.log").read_text()  # every thread's stack follows
    assert rows[run_k.name]["state"] == "crashed" and rows[run_k.name]["error"] == NO_ERROR_WRITTEN
    assert rows[run_k.name]["step"] >= 2 and rows[run_k.name]["total_steps"] == 500

    # A Metal abort writes its line before the abort; that line is the cause.
    with (run_k / "train.log").open("a") as fh:
        fh.write(f"{METAL_MALLOC}\n{FAULTHANDLER_DUMP}")
    assert _ls(runs)[run_k.name]["error"] == METAL_MALLOC

    # The aborted run resumed, then killed without a word: the old abort is not its cause.
    resumed = _start(runs, "--resume", str(run_a))
    try:
        assert first_line(resumed) == run_a
        wait_for_step(run_a, rows[run_a.name]["step"] + 1, resumed)
        _wait_dead(resumed, signal.SIGKILL)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.wait()
    assert _ls(runs)[run_a.name]["error"] == NO_ERROR_WRITTEN
