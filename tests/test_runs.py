import json
import os
import subprocess
import sys
import time

import pytest

from trainer.pure.runs import (
    atomic_write_json,
    atomic_write_text,
    create_run_dir,
    effective_state,
    list_runs,
    pid_alive,
    read_status,
    sanitize_label,
    write_status,
)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_text_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_atomic_write_json_failure_keeps_old_file(tmp_path):
    target = tmp_path / "s.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["s.json"]


def test_write_status_merges_and_is_atomic(tmp_path):
    write_status(tmp_path, state="running", pid=os.getpid(), started_at=1.0, total_steps=10)
    status = write_status(tmp_path, step=3)
    assert status["state"] == "running" and status["step"] == 3 and status["total_steps"] == 10
    on_disk = read_status(tmp_path)
    assert on_disk["step"] == 3 and on_disk["pid"] == os.getpid()
    assert on_disk["updated_at"] >= on_disk["started_at"]
    assert os.listdir(tmp_path) == ["status.json"]


def test_status_defaults_and_error_is_one_line(tmp_path):
    status = write_status(tmp_path, state="failed", error="Traceback\n  boom\nValueError: x")
    assert status["error"] == "Traceback boom ValueError: x"
    for key in ("state", "pid", "started_at", "ended_at", "step", "total_steps", "error", "updated_at"):
        assert key in read_status(tmp_path)


def test_write_status_rejects_unknown_state(tmp_path):
    with pytest.raises(ValueError):
        write_status(tmp_path, state="exploded")


def test_read_status_of_a_folder_without_one_is_none(tmp_path):
    # Garbled files are not "missing": see test_a_damaged_status_reads_with_a_reason_and_never_raises.
    assert read_status(tmp_path) is None


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(None)
    assert not pid_alive(0)
    assert not pid_alive(-5)


def test_unreaped_child_counts_as_dead_and_keeps_its_exit_code():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    deadline = time.time() + 10
    while pid_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.02)
    assert not pid_alive(proc.pid)
    assert proc.wait(timeout=5) == 3  # pid_alive did not reap it


def test_effective_state_crashed_for_dead_pid():
    pid = dead_pid()
    assert effective_state({"state": "running", "pid": pid}) == "crashed"
    assert effective_state({"state": "stopping", "pid": pid}) == "crashed"
    assert effective_state({"state": "pending", "pid": pid}) == "crashed"
    # Trainers record their pid with their first status: a pending one without a pid has no
    # process that could ever move it on.
    assert effective_state({"state": "pending", "pid": None}) == "crashed"
    assert effective_state({"state": "completed", "pid": pid}) == "completed"
    assert effective_state({"state": "running", "pid": os.getpid()}) == "running"
    assert effective_state(None) == "unknown"


def test_create_run_dir_unique(tmp_path):
    now = time.mktime((2025, 1, 2, 3, 4, 5, 0, 0, -1))
    runs = tmp_path / "runs"
    first = create_run_dir(runs, "demo", now=now)
    second = create_run_dir(runs, "demo", now=now)
    third = create_run_dir(runs, "demo", now=now)
    assert first.name == "20250102-030405-demo"
    assert second.name == "20250102-030405-demo-2"
    assert third.name == "20250102-030405-demo-3"
    assert all(p.is_dir() for p in (first, second, third))


def test_create_run_dir_sanitizes_label(tmp_path):
    run = create_run_dir(tmp_path, "../my run/é*?")
    assert run.parent == tmp_path
    assert run.name.endswith("-my-run")
    assert sanitize_label("") == "run"
    assert sanitize_label("...") == "run"
    assert sanitize_label("a b/c") == "a-b-c"
    assert sanitize_label("ok_name-1.2") == "ok_name-1.2"


def test_list_runs_newest_first(tmp_path):
    assert list_runs(tmp_path / "missing") == []
    old = create_run_dir(tmp_path, "a", now=time.mktime((2024, 5, 1, 0, 0, 0, 0, 0, -1)))
    new = create_run_dir(tmp_path, "b", now=time.mktime((2025, 5, 1, 0, 0, 0, 0, 0, -1)))
    same = [create_run_dir(tmp_path, "c", now=time.mktime((2025, 5, 1, 0, 0, 0, 0, 0, -1))) for _ in range(10)]
    empty = create_run_dir(tmp_path, "empty")  # neither config nor status: not a run
    for run in (old, new, *same):
        write_status(run, state="completed")
    (tmp_path / "stray.txt").write_text("x")
    runs = list_runs(tmp_path)
    assert empty not in runs
    assert runs[-1] == old
    assert runs[0] == same[-1]  # "-10" is newer than "-9"
    assert runs.index(same[0]) > runs.index(same[1])
    (old / "status.json").unlink()
    (old / "config.toml").write_text("")
    assert list_runs(tmp_path)[-1] == old


def test_run_label_strips_stamp_and_collision_suffix():
    from trainer.pure.runs import run_label

    assert run_label("20261127-142102-demo") == "demo"
    assert run_label("20261127-142102-beta-sweep-2") == "beta-sweep"
    assert run_label("my-hand-made-run") == "my-hand-made-run"


def test_move_to_trash_never_overwrites(tmp_path):
    from trainer.pure.runs import TRASH_DIR, move_to_trash

    targets = []
    for _ in range(3):
        (tmp_path / "x.toml").write_text("a")
        targets.append(move_to_trash(tmp_path / "x.toml"))
    assert len(set(targets)) == 3 and all(t.parent == tmp_path / TRASH_DIR for t in targets)
    assert not (tmp_path / "x.toml").exists()


@pytest.mark.parametrize("raw, reason, state", [
    (b'{"state": "running", "pid": 1, "total_steps": "x"}', 'status.json: total_steps = "x" is not valid', None),
    (b'{"state": "stopped", "total_steps": Infinity}', "status.json: total_steps = inf is not valid", "stopped"),
    (b'{"state": "stopped", "step": -3}', "status.json: step = -3 is not valid", "stopped"),
    (b"", "status.json is empty", "unknown"),
    (b'{"state": "runn', "status.json is not valid JSON", "unknown"),
    (b"\xff\xfe\x00", "status.json is not valid JSON", "unknown"),
    (b"[1, 2]", "status.json is not a JSON object", "unknown"),
    (b'{"state": "paused"}', 'status.json: state = "paused" is not valid', "unknown"),
    (b"[" * 5000 + b"]" * 5000, "status.json is not valid JSON", "unknown"),
])
def test_a_damaged_status_reads_with_a_reason_and_never_raises(tmp_path, raw, reason, state):
    (tmp_path / "status.json").write_bytes(raw)
    status = read_status(tmp_path)
    assert status["damaged"] == reason
    assert isinstance(status["step"], int) and status["total_steps"] is None or isinstance(status["total_steps"], int)
    if state is not None:
        assert effective_state(status) == state
    # The trainer's next write repairs the file.
    write_status(tmp_path, state="stopped", step=4)
    repaired = read_status(tmp_path)
    assert "damaged" not in repaired and repaired["state"] == "stopped" and repaired["step"] == 4


def test_an_unreadable_status_is_damaged_not_missing(tmp_path):
    (tmp_path / "status.json").mkdir()
    status = read_status(tmp_path)
    assert status["damaged"].startswith("status.json: cannot be read")
    assert effective_state(status) == "unknown"


def test_final_status_is_written_even_when_the_disk_is_full(tmp_path, monkeypatch):
    import errno

    from trainer.pure import runs

    write_status(tmp_path, state="running", pid=os.getpid(), step=7)

    def no_space(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "atomic_write_text", no_space)
    write_status(tmp_path, state="failed", error="no space left on device while saving step-0000010")
    status = read_status(tmp_path)
    assert status["state"] == "failed" and status["step"] == 7 and "damaged" not in status
    assert status["error"].startswith("no space left")

    # Other errors (a read-only folder) are not hidden.
    def read_only(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(runs, "atomic_write_text", read_only)
    with pytest.raises(PermissionError):
        write_status(tmp_path, state="stopped")
