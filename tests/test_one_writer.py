"""One writer per run folder: the trainer's lock (trainer.pure.run_lock) refuses a second
trainer on the same run, whoever starts it and however fast."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from trainer_helpers import DEMO, ORPO_TRAIN, REPO, first_line, start_trainer, train_steps, wait_for_step

from trainer.pure.run_folder import RunFolder
from trainer.pure.run_lock import RunBusy, RunLock, holder
from trainer.pure.runs import read_status


def test_lock_is_exclusive_names_its_holder_and_dies_with_it(tmp_path):
    assert holder(tmp_path) is None
    with RunLock(tmp_path):
        assert holder(tmp_path) == __import__("os").getpid()
        try:
            RunLock(tmp_path).acquire(patience=0.05)
        except RunBusy as exc:
            assert str(exc) == f"{tmp_path} is being trained by pid {__import__('os').getpid()}"
        else:
            raise AssertionError("a second lock on the same run was granted")
    assert holder(tmp_path) is None
    # A holder killed with SIGKILL leaves no stale lock behind.
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from trainer.pure.run_lock import RunLock; "
                              f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    assert holder(tmp_path) == child.pid
    child.kill()
    child.wait()
    assert holder(tmp_path) is None
    RunLock(tmp_path).acquire().release()


def _stopped_run(tmp_path, stop_after: int):
    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "training.iters=500",
                         "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0",
                         "--set", "training.save_every=500")
    run_dir = first_line(proc)
    wait_for_step(run_dir, stop_after, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    return run_dir, read_status(run_dir)["step"]


def test_resume_while_a_trainer_holds_the_run_exits_2_at_once(tmp_path):
    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "training.iters=500",
                         "--set", "training.steps_per_eval=0")
    run_dir = first_line(proc)  # printed before the model loads: the run is still "pending"
    try:
        second = subprocess.run([*ORPO_TRAIN, "--resume", str(run_dir)], capture_output=True, text=True,
                                timeout=60, cwd=REPO)
        assert second.returncode == 2
        assert second.stderr.strip() == f"orpo-train: {run_dir} is being trained by pid {proc.pid}"
        assert read_status(run_dir)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_twenty_concurrent_resumes_train_each_step_exactly_once(tmp_path):
    run_dir, stopped_at = _stopped_run(tmp_path, 2)
    target = stopped_at + 6
    results: list[subprocess.CompletedProcess] = []
    start = threading.Barrier(20)

    def attempt() -> None:
        start.wait()
        results.append(subprocess.run([*ORPO_TRAIN, "--resume", str(run_dir), "--set", f"training.iters={target}"],
                                      capture_output=True, text=True, timeout=300, cwd=REPO))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes.count(0) == 1 and codes.count(2) == 19, [(r.returncode, r.stderr[-300:]) for r in results]
    refused = [r.stderr.strip() for r in results if r.returncode == 2]
    # A latecomer that starts after the winner finished is refused for the finished run.
    assert all("is being trained by pid" in line or f"already at step {target}" in line for line in refused), refused
    assert train_steps(run_dir) == list(range(1, target + 1))
    assert read_status(run_dir)["state"] == "completed"
    assert RunFolder(run_dir).log.read_text().count("resumed from") == 1


def test_resume_without_a_checkpoint_starts_over_and_sets_the_earlier_attempt_aside(tmp_path):
    from trainer.pure.events import read_events

    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "training.iters=500",
                         "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0")
    run_dir = first_line(proc)
    wait_for_step(run_dir, 4, proc)  # save_every is 50: no checkpoint yet
    proc.kill()
    proc.wait()
    run = RunFolder(run_dir)
    earlier = train_steps(run_dir)
    assert run.latest_checkpoint() is None and len(earlier) >= 4
    # A half-written checkpoint folder, as a kill during a save leaves it.
    run.checkpoint_tmp(50, 999999).mkdir(parents=True)

    done = subprocess.run([*ORPO_TRAIN, "--resume", str(run_dir), "--set", "training.iters=3"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert train_steps(run_dir) == [1, 2, 3]  # only the new attempt, each step once
    kept = run.attempt(1)
    assert [e["step"] for e in read_events(kept / "metrics.jsonl") if e["event"] == "train"] == earlier
    assert run.checkpoint_leftovers() == []
    log = run.log.read_text()
    assert "no checkpoint to resume from: starting over at step 0" in log and "attempt-1/" in log
    assert "removed 1 unfinished checkpoint folder(s)" in log


def test_resume_after_the_adapters_were_deleted_starts_over_too(tmp_path):
    import shutil

    run_dir, stopped_at = _stopped_run(tmp_path, 3)
    run = RunFolder(run_dir)
    shutil.rmtree(run.adapters)
    done = subprocess.run([*ORPO_TRAIN, "--resume", str(run_dir), "--set", "training.iters=2"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert train_steps(run_dir) == [1, 2]
    assert (run.attempt(1) / "metrics.jsonl").is_file() and run.adapter_weights.is_file()


def test_a_trainer_killed_while_loading_is_crashed_not_pending_and_resumes(tmp_path):
    from trainer.pure.runs import effective_state

    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "training.iters=3",
                         "--set", "training.steps_per_eval=0", "--set", "training.steps_per_report=1")
    run_dir = first_line(proc)  # the config and a pending status with its pid exist now
    proc.kill()
    proc.wait()
    status = read_status(run_dir)
    assert status["state"] == "pending" and status["pid"] == proc.pid
    assert effective_state(status) == "crashed"
    done = subprocess.run([*ORPO_TRAIN, "--resume", str(run_dir)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert train_steps(run_dir) == [1, 2, 3] and read_status(run_dir)["state"] == "completed"
