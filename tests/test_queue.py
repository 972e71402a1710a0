"""The sweep queue: defining a grid, editing the queue file under its lock, and the detached
runner executing real (tiny) runs one after another."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.pure import queue
from trainer.pure.config import ConfigError
from trainer.pure.runs import pid_alive, read_status

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "presets" / "demo.toml"
TINY = ["training.steps_per_eval=0", "training.save_every=3", "training.iters=3"]


def _states(runs_dir):
    return [it["state"] for it in queue.read(runs_dir)["items"]]


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def tiny_env(monkeypatch):
    # Inherited by the runner and its trainers: no kernel compilation for three steps.
    monkeypatch.setenv("MLX_DISABLE_COMPILE", "1")


@pytest.fixture
def reap_runner():
    """Whatever a test starts detached is ended by its pid if the test fails midway."""
    pids = []
    yield pids.append
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)


# ---------------------------------------------------------------------------- defining a sweep


def test_sweep_items_two_by_two_grid():
    items = queue.sweep_items(DEMO, {"orpo.beta": [0.1, 0.2], "finetune.rank": [8, 16]}, overrides=TINY)
    assert [it["label"] for it in items] == [
        "beta=0.1,rank=8", "beta=0.1,rank=16", "beta=0.2,rank=8", "beta=0.2,rank=16"]
    assert items[3]["overrides"] == [*TINY, "orpo.beta=0.2", "finetune.rank=16"]
    assert {it["state"] for it in items} == {"queued"}
    assert len({it["id"] for it in items}) == 4
    assert items[0]["preset"] == str(DEMO.resolve()) and Path(items[0]["preset"]).is_absolute()


def test_sweep_takes_typed_text_values():
    items = queue.sweep_items(DEMO, {"training.learning_rate": ["1e-4", 2e-4]})
    assert [it["overrides"][-1] for it in items] == ["training.learning_rate=1e-4", "training.learning_rate=0.0002"]


def test_bad_value_names_the_key_and_queues_nothing(tmp_path):
    with pytest.raises(ConfigError) as err:
        items = queue.sweep_items(DEMO, {"orpo.beta": [0.1, -1], "finetune.rank": [8]})
        queue.add(tmp_path, items)
    assert err.value.key == "orpo.beta" and "orpo.beta" in str(err.value)
    assert queue.read(tmp_path)["items"] == []
    with pytest.raises(ConfigError) as err:
        queue.sweep_items(DEMO, {"orpo.betta": [0.1]})
    assert "orpo.betta" in str(err.value)
    with pytest.raises(ConfigError):
        queue.sweep_items(DEMO, {"orpo.beta": [0.1], "finetune.rank": [8], "training.seed": [1]})


# ---------------------------------------------------------------------------- editing


def _queue_of_four(runs_dir):
    items = queue.sweep_items(DEMO, {"training.seed": [1, 2, 3, 4]})
    queue.add(runs_dir, items)
    return [it["id"] for it in items]


def test_add_move_only_reorders_queued_items(tmp_path):
    a, b, c, d = _queue_of_four(tmp_path)
    assert queue.move(tmp_path, c, -1)
    assert [it["id"] for it in queue.read(tmp_path)["items"]] == [a, c, b, d]
    assert queue.move(tmp_path, a, 99)  # clamped to the end
    assert [it["id"] for it in queue.read(tmp_path)["items"]] == [c, b, d, a]
    assert not queue.move(tmp_path, c, -1)  # already first
    # An item that is no longer queued keeps its place and cannot be moved.
    queue.cancel(tmp_path, b)
    assert not queue.move(tmp_path, b, 1)
    assert queue.move(tmp_path, d, -5)
    assert [it["id"] for it in queue.read(tmp_path)["items"]] == [d, b, c, a]


def test_cancel_and_pause(tmp_path):
    a, b, c, d = _queue_of_four(tmp_path)
    assert queue.cancel(tmp_path, b)
    assert not queue.cancel(tmp_path, b)  # already final
    assert not queue.cancel(tmp_path, "no-such-id")
    assert _states(tmp_path) == ["queued", "cancelled", "queued", "queued"]
    assert queue.read(tmp_path)["items"][1]["ended_at"] is not None
    queue.set_paused(tmp_path, True)
    assert queue.read(tmp_path)["paused"] is True
    assert queue.cancel_all(tmp_path) == 3
    assert set(_states(tmp_path)) == {"cancelled"}
    assert queue.ensure_runner(tmp_path) is None  # nothing left to run: no runner
    assert not queue.runner_alive(tmp_path)


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    code = (
        "import sys; from trainer.pure import queue\n"
        "for n in range(20):\n"
        "    queue.add(sys.argv[1], [dict(id=f'{sys.argv[2]}-{n}', state='queued', label=str(n))])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag], cwd=REPO) for tag in "ab"]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    ids = [it["id"] for it in queue.read(tmp_path)["items"]]
    assert sorted(ids) == sorted(f"{t}-{n}" for t in "ab" for n in range(20))
    # Each writer's own items stay in the order it added them.
    assert [i for i in ids if i.startswith("a-")] == [f"a-{n}" for n in range(20)]


def test_status_cli_prints_items(tmp_path):
    _queue_of_four(tmp_path)
    out = subprocess.run([sys.executable, "-m", "trainer.queue_runner", "status", "--runs-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "runner: not running" in out and out.count("queued") == 4 and "seed=3" in out


# ---------------------------------------------------------------------------- the runner, for real


def test_runner_executes_a_sweep_and_exits_by_itself(tmp_path, tiny_env, reap_runner):
    items = queue.sweep_items(DEMO, {"training.learning_rate": [1e-3, 2e-3]}, overrides=TINY)
    queue.add(tmp_path, items)
    # Paused, the first runner holds its role (and its lock) until the queue resumes, so a
    # second runner that waited for it, or ran the queue itself, would never end: no clock
    # decides whether it left at once.
    queue.set_paused(tmp_path, True)
    pid = queue.ensure_runner(tmp_path)
    reap_runner(pid)
    assert pid and queue.runner_alive(tmp_path)
    assert queue.ensure_runner(tmp_path) == pid  # no duplicate
    # A runner started by hand while one is alive leaves at once.
    second = subprocess.run([sys.executable, "-m", "trainer.queue_runner", "run", "--runs-dir", str(tmp_path)],
                            cwd=REPO, timeout=120)
    assert second.returncode == 0
    assert queue.read(tmp_path)["runner_pid"] == pid and _states(tmp_path) == ["queued", "queued"]
    queue.set_paused(tmp_path, False)

    # Nothing else is called from here on: the runner does the rest alone.
    _wait_for(lambda: _states(tmp_path) == ["completed", "completed"], 240, "both sweep runs to finish")
    data = queue.read(tmp_path)
    run_dirs = [Path(it["run_dir"]) for it in data["items"]]
    assert len(set(run_dirs)) == 2
    for item, run_dir in zip(data["items"], run_dirs):
        assert run_dir.parent == tmp_path.resolve()
        assert read_status(run_dir)["state"] == "completed"
        assert item["exit_code"] == 0 and item["started_at"] <= item["ended_at"]
    assert "learning_rate-0.001" in run_dirs[0].name
    _wait_for(lambda: not pid_alive(pid), 30, "the runner to exit by itself")
    assert queue.read(tmp_path)["runner_pid"] is None
    log = (tmp_path / "queue.log").read_text()
    assert log.count(": running") == 2 and log.count(": completed (exit 0)") == 2


def test_runner_honours_pause_cancel_and_sigterm(tmp_path, tiny_env, reap_runner):
    long_run = ["training.steps_per_eval=0", "training.save_every=1000", "training.iters=1000"]
    items = queue.sweep_items(DEMO, {"training.seed": [1, 2]}, overrides=long_run)
    queue.add(tmp_path, items)
    queue.set_paused(tmp_path, True)
    pid = queue.ensure_runner(tmp_path)
    reap_runner(pid)
    # From when it holds its lock (its start takes seconds on a loaded machine), the runner
    # passes over the paused queue every POLL_S: two passes and more start nothing.
    _wait_for(lambda: _runner_lock_held(tmp_path), 120, "the runner to hold its lock")
    time.sleep(2.5)
    assert _states(tmp_path) == ["queued", "queued"] and queue.runner_alive(tmp_path)

    queue.set_paused(tmp_path, False)
    _wait_for(lambda: _running_trainer(tmp_path, 0), 120, "the first run to be training")
    assert queue.cancel(tmp_path, items[0]["id"])
    _wait_for(lambda: _states(tmp_path)[0] == "cancelled", 120, "the cancelled run to stop")
    assert read_status(queue.read(tmp_path)["items"][0]["run_dir"])["state"] == "stopped"

    _wait_for(lambda: _running_trainer(tmp_path, 1), 120, "the second run to be training")
    os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: not pid_alive(pid), 120, "the runner to stop its run and exit")
    item = queue.read(tmp_path)["items"][1]
    assert item["state"] == "stopped" and item["exit_code"] == 130
    assert read_status(item["run_dir"])["state"] == "stopped"
    assert queue.read(tmp_path)["runner_pid"] is None


def _runner_lock_held(runs_dir) -> bool:
    with queue.flock(Path(runs_dir) / queue.RUNNER_LOCK_FILE, blocking=False) as got:
        return not got


def _running_trainer(runs_dir, index):
    run_dir = queue.read(runs_dir)["items"][index].get("run_dir")
    return bool(run_dir) and (read_status(run_dir) or {}).get("state") == "running"


def test_queue_module_stays_in_the_pure_half():
    code = "import sys, trainer.pure.queue; assert 'mlx' not in sys.modules and 'textual' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_runner_treats_sigint_like_sigterm(tmp_path, tiny_env, reap_runner):
    # Ctrl-C on a runner started by hand used to kill it and leave its item "running" forever.
    long_run = ["training.steps_per_eval=0", "training.save_every=1000", "training.iters=1000"]
    queue.add(tmp_path, queue.sweep_items(DEMO, {"training.seed": [1, 2]}, overrides=long_run))
    pid = queue.ensure_runner(tmp_path)
    reap_runner(pid)
    _wait_for(lambda: _running_trainer(tmp_path, 0), 120, "the first run to be training")
    os.kill(pid, signal.SIGINT)
    _wait_for(lambda: not pid_alive(pid), 120, "the runner to stop its run and exit")
    first, second = queue.read(tmp_path)["items"]
    assert first["state"] == "stopped" and first["exit_code"] == 130
    assert read_status(first["run_dir"])["state"] == "stopped"
    assert second["state"] == "queued" and queue.read(tmp_path)["runner_pid"] is None


@pytest.mark.parametrize("raw", [b'{"v": 1, "items": [{"id": "a", "sta', b"", b"[]", b'{"items": [1]}'])
def test_a_damaged_queue_is_shown_kept_and_never_overwritten(tmp_path, raw):
    path = tmp_path / "queue.json"
    path.write_bytes(raw)
    data = queue.read(tmp_path)
    assert data["items"] == [] and data[queue.DAMAGED].startswith("queue.json")
    items = queue.sweep_items(DEMO, {"training.seed": [1]})
    for change in (lambda: queue.add(tmp_path, items), lambda: queue.set_paused(tmp_path, True),
                   lambda: queue.ensure_runner(tmp_path), lambda: queue.cancel_all(tmp_path)):
        with pytest.raises(queue.QueueDamaged, match="nothing was changed"):
            change()
    assert path.read_bytes() == raw
    status = subprocess.run([sys.executable, "-m", "trainer.queue_runner", "status", "--runs-dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert status.returncode == 2 and "queue.json" in status.stderr
    kept = queue.set_aside_damaged(tmp_path)
    assert kept.read_bytes() == raw and not path.exists()
    queue.add(tmp_path, items)
    assert _states(tmp_path) == ["queued"]


def test_queue_files_that_said_done_read_as_completed(tmp_path):
    (tmp_path / "queue.json").write_text('{"v": 1, "items": [{"id": "x", "state": "done", "label": "a"}]}')
    assert _states(tmp_path) == ["completed"]
