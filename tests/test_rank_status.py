"""Each rank of a distributed run as its files tell it (trainer.pure.rank_status), where the
app and `orpo-tui ls` show it, and the ranks a SIGKILLed launcher leaves behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trainer.pure.rank_status import RANK_PIDS, WORLD_SIZE, rank_states, ranks_line, world_size
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import pid_alive, write_status
from trainer.pure.trainer_process import RANK_OF_FLAG
from tui.launcher import kill_orphan_ranks
from tui.screens.compare import summary_columns

REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _two_rank_run(root: Path, pids: list[int] | None) -> Path:
    run = root / "20260101-120000-two"
    run.mkdir(parents=True)
    write_status(run, state="running", pid=os.getpid(), step=6, total_steps=40, **{WORLD_SIZE: 2, RANK_PIDS: pids})
    folder = RunFolder(run)
    folder.log.write_text("[12:00:00] orpo-train started, pid 1\n[12:00:05] step 6/40: loss 1.2000, nll 1.1\n"
                          "[12:00:06] step 6: checkpoint saved (step-0000006)\n"
                          "-----------\nmpirun detected that one or more processes exited\n")
    folder.rank_log(1).write_text("[12:00:01] rank 1 of 2 (ring backend)\n[12:00:04] step 4/40: loss 1.3\n"
                                  "[12:00:05] step 6/40: loss 1.2000, nll 1.1\n")
    return run


def test_each_rank_has_its_pid_its_liveness_and_its_own_logs_last_step_and_line(tmp_path):
    dead = _dead_pid()
    run = _two_rank_run(tmp_path, [os.getpid(), dead])
    status = json.loads(RunFolder(run).status.read_text())
    ranks = rank_states(run, status)
    assert [r.to_json() for r in ranks] == [
        {"rank": 0, "pid": os.getpid(), "alive": True, "step": 6, "line": "step 6: checkpoint saved (step-0000006)"},
        {"rank": 1, "pid": dead, "alive": False, "step": 6, "line": "step 6/40: loss 1.2000, nll 1.1"},
    ]
    assert ranks_line(ranks) == f"2 ranks · rank 0 step 6 (pid {os.getpid()} alive) · rank 1 step 6 (pid {dead} gone)"


def test_ranks_before_the_group_formed_a_stale_pid_list_and_one_process(tmp_path):
    run = _two_rank_run(tmp_path, None)  # rank 0 has not recorded the pids yet
    (run / "train.rank1.log").unlink()  # nor has rank 1 written a line
    status = {WORLD_SIZE: 2, RANK_PIDS: None}
    assert ranks_line(rank_states(run, status)) == "2 ranks · rank 0 step 6 (pid ?) · rank 1 no step yet (pid ?)"
    # Pids of an earlier start on three ranks do not describe this one's two.
    assert [r.pid for r in rank_states(run, {WORLD_SIZE: 2, RANK_PIDS: [1, 2, 3]})] == [None, None]
    assert rank_states(run, {WORLD_SIZE: 1}) == [] and rank_states(run, {}) == []
    assert world_size({}) is None and world_size({WORLD_SIZE: "2"}) is None and world_size({WORLD_SIZE: 2}) == 2


def test_ls_json_lists_the_world_size_and_each_rank(tmp_path):
    dead = _dead_pid()
    _two_rank_run(tmp_path / "runs", [os.getpid(), dead])
    out = subprocess.run([sys.executable, "-m", "tui", "ls", "--runs-dir", str(tmp_path / "runs"), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["world_size"] == 2
    assert [(r["rank"], r["pid"], r["step"]) for r in row["ranks"]] == [(0, os.getpid(), 6), (1, dead, 6)]
    assert row["ranks"][1]["alive"] is False
    table = subprocess.run([sys.executable, "-m", "tui", "ls", "--runs-dir", str(tmp_path / "runs")],
                           capture_output=True, text=True, cwd=REPO, timeout=60).stdout.splitlines()
    assert table[0].split()[:4] == ["RUN", "STATE", "STEP", "RANKS"] and table[1].split()[3] == "2"


def test_a_sigkilled_launchers_ranks_are_ended_and_an_unrelated_pid_is_left_alone():
    # Each says when its interpreter is up: before its exec, a child's command line is ours.
    sleeper = "import time; print('up', flush=True); time.sleep(60)"
    rank = subprocess.Popen([sys.executable, "-c", sleeper, RANK_OF_FLAG, "/tmp/x"], stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", sleeper], stdout=subprocess.PIPE, text=True)
    try:
        assert rank.stdout.readline().strip() == "up" and other.stdout.readline().strip() == "up"
        assert kill_orphan_ranks([rank.pid, other.pid, _dead_pid()]) == [rank.pid]
        rank.wait(timeout=10)
        assert pid_alive(other.pid)
    finally:
        for p in (rank, other):
            p.kill()
            p.wait()


def test_the_compare_summary_shows_ranks_only_when_a_run_had_several():
    one = {"run": "a", "world_size": 1}
    old = {"run": "b", "world_size": None}  # from before the world size was recorded
    assert "world_size" not in summary_columns([one, old], 10**6)
    assert "world_size" in summary_columns([one, {"run": "c", "world_size": 2}], 10**6)
