"""Starting and stopping trainer processes the way the app does."""

import subprocess
import sys
import time

import pytest
from trainer_helpers import DEMO, train_steps

from trainer.pure.runs import read_status, write_status
from tui.launcher import STOP_PHASES, Launcher, LaunchError, stop_run

# SIGINT's default action is set first: a shell's background job (how CI may be started)
# inherits SIGINT ignored, and Python then keeps it ignored.
IGNORE = "import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n{}\nprint('ready', flush=True)\ntime.sleep(120)\n"


def fake_trainer(run_dir, ignore):
    """A process that ignores the given signals, recorded in status.json as a running run."""
    lines = "\n".join(f"signal.signal(signal.{s}, signal.SIG_IGN)" for s in ignore)
    proc = subprocess.Popen([sys.executable, "-c", IGNORE.format(lines)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    write_status(run_dir, state="running", pid=proc.pid, step=3, total_steps=10)
    return proc


def alive_child(proc):
    return lambda pid: proc.poll() is None


@pytest.mark.parametrize("ignore, ended_by", [((), "SIGINT"), (("SIGINT",), "SIGTERM"), (("SIGINT", "SIGTERM"), "SIGKILL")])
def test_stop_escalates_only_as_far_as_needed(tmp_path, ignore, ended_by):
    proc = fake_trainer(tmp_path, ignore)
    phases = []
    # A signal the process ignores cannot end it however long the wait, so that wait is
    # short; the one it obeys gets a minute: stop_run returns as soon as the process is gone,
    # however slowly a loaded machine lets it exit (3 s was once too little in CI).
    waits = [0.5 if phase in ignore else 60.0 for phase in STOP_PHASES]
    got = stop_run(tmp_path, lambda phase, wait: phases.append(phase), waits=waits, alive=alive_child(proc))
    assert got == ended_by
    assert phases == ["SIGINT", "SIGTERM", "SIGKILL"][: phases.index(ended_by) + 1]
    assert proc.poll() is not None
    if ended_by == "SIGKILL":
        status = read_status(tmp_path)
        assert status["state"] == "stopped" and "SIGKILL" in status["error"]


def test_bad_preset_is_refused_with_the_trainers_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nlearning_rate = -1.0\n")
    with pytest.raises(LaunchError, match="training.learning_rate"):
        Launcher().start(bad, tmp_path / "runs")
    assert not [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]


def test_real_run_is_detached_stoppable_and_resumable(tmp_path):
    launcher = Launcher()
    run_dir = launcher.start(DEMO, tmp_path / "runs", ["training.iters=400", "training.steps_per_report=1",
                                                      "training.steps_per_eval=0"])
    deadline = time.monotonic() + 120
    while max(train_steps(run_dir), default=0) < 3:
        assert time.monotonic() < deadline, (run_dir / "train.log").read_text()
        time.sleep(0.2)
    pid = read_status(run_dir)["pid"]
    assert subprocess.run(["ps", "-o", "sid=", "-p", str(pid)], capture_output=True, text=True).stdout.strip() == str(pid)
    assert stop_run(run_dir, waits=(60, 10, 5)) == "SIGINT"
    status = read_status(run_dir)
    assert status["state"] == "stopped" and (run_dir / "adapters" / "adapters.safetensors").is_file()
    log = (run_dir / "train.log").read_text()
    assert "step 3/400" in log  # the trainer's output went to the run's log, not to a pipe

    launcher.resume(run_dir, [f"training.iters={status['step'] + 3}"])
    deadline = time.monotonic() + 120
    while (read_status(run_dir) or {}).get("state") != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert train_steps(run_dir) == list(range(1, status["step"] + 4))


def test_run_again_from_a_runs_resolved_config(tmp_path):
    from trainer.pure.config import config_from_dict, dump_toml, load_preset

    old = tmp_path / "old-run"
    old.mkdir()
    dump_toml(config_from_dict({"training": {"iters": 2, "steps_per_eval": 0}}, "t"), old / "config.toml")
    run_dir = Launcher().start(old / "config.toml", tmp_path / "runs", ["output.name=demo"])
    assert run_dir.name.endswith("-demo")
    deadline = time.monotonic() + 120
    while (read_status(run_dir) or {}).get("state") not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert read_status(run_dir)["state"] == "completed"
    assert load_preset(run_dir / "config.toml").training.iters == 2


def test_runs_index_reports_health_alarms(tmp_path):
    from trainer.pure.events import MetricsWriter
    from tui.runs_index import RunsIndex

    run = tmp_path / "20260101-000000-demo"
    run.mkdir()
    write_status(run, state="completed", step=3, total_steps=3)
    with MetricsWriter(run / "metrics.jsonl") as w:
        w.write("train", 1, loss=2.0)
        w.write("train", 2, loss=float("nan"))
    (summary,) = RunsIndex(tmp_path).refresh()
    assert summary.preset == "demo" and "nan" in summary.alarm and "step 2" in summary.alarm
