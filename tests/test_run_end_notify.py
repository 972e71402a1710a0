"""Telling the user that a run ended: the terminal's escape sequences, the words, the app's
watch over which runs ended, and the user's notify_command run by real trainers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainer_helpers import DEMO, run_trainer

from trainer.notify import notify_run_end
from trainer.pure.events import MetricsWriter, last_event
from trainer.pure.run_end import RunEnd, command_argv, read_run_end
from trainer.pure.runs import write_status
from trainer.pure.user_settings import NotifySettings, notify_settings, read_user_settings, user_settings_path
from tui.run_watch import RunWatch
from tui.terminal_notify import notification, osc9, osc777, tmux_passthrough

RECORDER = Path(__file__).with_name("notify_recorder.py")


# --------------------------------------------------------------------------- escape sequences


def test_osc_9_and_777_with_the_bell_as_bytes():
    assert osc9("orpo-tui: run completed") == "\x1b]9;orpo-tui: run completed\x07"
    assert osc777("orpo-tui", "run completed") == "\x1b]777;notify;orpo-tui;run completed\x07"
    assert notification("orpo-tui", "r completed, val loss 0.5000", in_tmux=False) == (
        "\x07\x1b]9;orpo-tui: r completed, val loss 0.5000\x07\x1b]777;notify;orpo-tui;r completed, val loss 0.5000\x07")


def test_inside_tmux_each_sequence_is_wrapped_with_every_escape_doubled():
    assert tmux_passthrough("\x1b]9;hi\x07") == "\x1bPtmux;\x1b\x1b]9;hi\x07\x1b\\"
    assert notification("orpo-tui", "r stopped", in_tmux=True) == (
        "\x07"  # the bell is tmux's own business: not wrapped
        "\x1bPtmux;\x1b\x1b]9;orpo-tui: r stopped\x07\x1b\\"
        "\x1bPtmux;\x1b\x1b]777;notify;orpo-tui;r stopped\x07\x1b\\")


def test_only_the_kinds_asked_for():
    assert notification("t", "b", in_tmux=False, kinds=("osc9",)) == "\x1b]9;t: b\x07"
    assert notification("t", "b", in_tmux=True, kinds=("bell", "osc777")) == (
        "\x07\x1bPtmux;\x1b\x1b]777;notify;t;b\x07\x1b\\")
    assert notification("t", "b", in_tmux=False, kinds=()) == ""


def test_text_from_a_run_folder_cannot_end_the_sequence_or_start_another():
    text = osc9("a\x07b\x1b]0;title\x9cc\nd")
    assert text == "\x1b]9;a b ]0;title c d\x07"
    assert osc777("x;y", "b;c") == "\x1b]777;notify;x,y;b;c\x07"  # the title cannot shift the fields


# --------------------------------------------------------------------------- the words


def ended_run(runs: Path, name="20260101-000000-demo", state="completed", val_losses=(0.9, 0.61234), pid=None,
              error=None, samples=0) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    write_status(run, state=state, pid=pid, step=4, total_steps=4, started_at=1.0, error=error)
    with MetricsWriter(run / "metrics.jsonl") as w:
        for i, loss in enumerate(val_losses):
            w.write("val", 2 * i, loss=loss)
            for k in range(samples):
                w.write("sample", 2 * i, prompt="p" * 200, completion=f'"val" {k} ' + "c" * 300, index=k)
    return run


def test_the_end_of_a_run_reads_its_last_val_loss_from_the_end_of_a_long_metrics_file(tmp_path):
    run = ended_run(tmp_path, samples=400)  # ~400 kB of samples after the last val event
    assert (run / "metrics.jsonl").stat().st_size > 6 * 64 * 1024
    end = read_run_end(run)
    assert end == RunEnd(run, "completed", 0.61234, None)
    assert end.message == "20260101-000000-demo completed, val loss 0.6123"
    assert last_event(run / "metrics.jsonl", "checkpoint") is None
    failed = read_run_end(ended_run(tmp_path, "f", "failed", (), error="loss became nan at step 3" + " x" * 100))
    assert failed.val_loss is None and failed.val_loss_text == "none"
    assert failed.message.startswith("f failed, no val loss: loss became nan at step 3") and len(failed.message) < 160


def test_notify_command_placeholders_are_filled_once_and_the_message_added_when_there_are_none(tmp_path):
    end = RunEnd(tmp_path / "20260101-000000-demo", "completed", 0.61234)
    assert command_argv(["ntfy", "publish", "topic"], end) == ["ntfy", "publish", "topic",
                                                              "20260101-000000-demo completed, val loss 0.6123"]
    argv = command_argv(["x", "{name}:{state}", "--loss={val_loss}", "{title}", "{json}", "{run_dir}"], end)
    assert argv == ["x", "20260101-000000-demo:completed", "--loss=0.6123", "orpo-tui: 20260101-000000-demo completed",
                    "{json}", str(tmp_path / "20260101-000000-demo")]
    # Text put in is not read again: an error that quotes a placeholder stays as it is.
    failed = RunEnd(tmp_path / "r", "failed", None, "bad key {name}")
    assert command_argv(["{message}"], failed) == ["r failed, no val loss: bad key {name}"]


def test_settings_keys_of_the_wrong_type_give_one_line_each_and_their_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = user_settings_path()
    assert path == tmp_path / "orpo-tui" / "settings.toml"
    assert read_user_settings() == ({}, None)
    settings, problems = notify_settings({"notify_terminal": "no", "notify_command": "ntfy publish x"})
    assert settings == NotifySettings(terminal=("bell", "osc9", "osc777"), command=())
    assert problems == [f"{path}: notify_terminal must be true, false or a list of 'bell', 'osc9', 'osc777', not 'no'",
                        f'{path}: notify_command must be a list of strings, e.g. ["ntfy", "publish", "my-topic"]']
    assert notify_settings({"notify_terminal": False, "notify_command": ["a", "b"]}) == (NotifySettings((), ("a", "b")), [])
    # One of the two notifications, for a terminal that would show both.
    assert notify_settings({"notify_terminal": ["osc9", "bell"]}) == (NotifySettings(("bell", "osc9")), [])
    assert notify_settings({"notify_terminal": ["osc99"]})[1] != []
    path.parent.mkdir()
    path.write_text("notify_command = [")
    table, problem = read_user_settings()
    assert table == {} and problem.startswith(f"{path}: ")


# --------------------------------------------------------------------------- the app's watch




def test_the_watch_tells_once_of_runs_it_saw_active_and_of_crashes(tmp_path, trainer_stand_in):
    runs = tmp_path / "runs"
    old = ended_run(runs, "20260101-000000-old")  # over before the app looked: never told
    live = ended_run(runs, "20260101-000001-live", "running", (0.8,), pid=trainer_stand_in.pid)
    watch = RunWatch(runs)
    assert watch.check() == [] and watch.active == [live]
    watch.record_swap(1e9)
    write_status(live, step=7)
    watch.check()
    watch.record_swap(1e9)  # the same level: not kept again
    watch.record_swap(2e9)
    assert watch.swap_samples(live) == [(4, 1e9), (7, 2e9)]
    with MetricsWriter(live / "metrics.jsonl") as w:
        w.write("val", 8, loss=0.5)
    write_status(live, state="completed")
    assert watch.check() == [RunEnd(live, "completed", 0.5, None)]
    assert watch.check() == [] and watch.active == []
    # Resumed and then killed: watched again, and told as crashed (nothing was written).
    write_status(live, state="running")
    assert watch.check() == []
    trainer_stand_in.kill()
    trainer_stand_in.wait()
    assert watch.check() == [RunEnd(live, "crashed", 0.5, None)]
    assert old not in [e.run_dir for e in watch.check()]


def test_a_run_the_app_started_is_told_even_if_it_ended_before_any_check(tmp_path):
    runs = tmp_path / "runs"
    watch = RunWatch(runs)
    watch.check()
    run = ended_run(runs, "20260101-000002-quick", "failed", (), error="no data")
    watch.expect(runs / ".." / "runs" / run.name)  # however the launcher spelled the path
    assert watch.check() == [RunEnd(run, "failed", None, "no data")]


# --------------------------------------------------------------------------- notify_command


def write_settings(config: Path, command: list[str]) -> Path:
    path = config / "orpo-tui" / "settings.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"notify_command = {json.dumps(command)}\n")
    return path


def recorded(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_a_crashed_run_is_told_with_state_crashed_and_a_broken_command_is_a_log_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "calls.jsonl"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = ended_run(tmp_path / "runs", state="running", pid=dead.pid)
    write_settings(tmp_path / "config", [sys.executable, str(RECORDER), str(out), "{state}", "{val_loss}"])
    lines: list[str] = []
    assert notify_run_end(run, lines.append) == 0  # what the queue runner calls for a trainer that died
    assert recorded(out)[0]["argv"] == ["crashed", "0.6123"]
    assert lines == [f"notify_command: ran {sys.executable} for {run.name} crashed"]
    write_settings(tmp_path / "config", [str(tmp_path / "no-such-program")])
    lines.clear()
    assert notify_run_end(run, lines.append) is None
    assert lines == [f"notify_command: cannot run {tmp_path / 'no-such-program'}: No such file or directory"]


def test_the_trainer_runs_notify_command_with_the_runs_name_state_and_final_val_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "calls.jsonl"
    write_settings(tmp_path / "config", [sys.executable, str(RECORDER), str(out), "{name}", "{state}", "{val_loss}"])
    runs = tmp_path / "runs"
    proc = run_trainer(str(DEMO), "--runs-dir", str(runs), "--set", "training.iters=4", "--set", "training.steps_per_eval=2",
                       "--set", "training.steps_per_report=2", "--set", "training.sample_prompts=0")
    assert proc.returncode == 0, proc.stderr
    run = Path(proc.stdout.splitlines()[0])
    final = last_event(run / "metrics.jsonl", "val")
    assert final["step"] == 4
    calls = recorded(out)
    assert [c["argv"] for c in calls] == [[run.name, "completed", f"{final['loss']:.4f}"]]
    assert calls[0]["env"] == {"ORPO_RUN_NAME": run.name, "ORPO_RUN_STATE": "completed",
                               "ORPO_VAL_LOSS": repr(final["loss"]), "ORPO_RUN_DIR": str(run)}
    assert f"notify_command: ran {sys.executable} for {run.name} completed" in (run / "train.log").read_text()

    # A run that fails while loading its data notifies too, with no val loss.
    proc = run_trainer(str(DEMO), "--runs-dir", str(runs), "--set", "training.batch_size=60000")
    assert proc.returncode == 2
    failed = Path(proc.stdout.splitlines()[0])
    assert recorded(out)[1]["argv"] == [failed.name, "failed", "none"]


def test_a_stopped_trainer_notifies_and_no_command_means_no_call(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "calls.jsonl"
    write_settings(tmp_path / "config", [sys.executable, str(RECORDER), str(out), "{message}"])
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "trainer", str(DEMO), "--runs-dir", str(runs),
                             "--set", "training.iters=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=DEMO.parents[1])
    run = Path(proc.stdout.readline().strip())
    deadline = time.monotonic() + 120
    while '"train"' not in ((run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    [call] = recorded(out)
    val = last_event(run / "metrics.jsonl", "val")
    assert call["argv"] == [f"{run.name} stopped, val loss {val['loss']:.4f}"]

    (tmp_path / "config" / "orpo-tui" / "settings.toml").write_text("notify_terminal = false\n")
    proc = run_trainer(str(DEMO), "--runs-dir", str(runs), "--set", "training.batch_size=60000")
    assert proc.returncode == 2 and len(recorded(out)) == 1
    assert "notify_command" not in (Path(proc.stdout.splitlines()[0]) / "train.log").read_text()


def test_queued_runs_notify_and_the_runner_tells_of_a_trainer_that_was_killed(tmp_path, monkeypatch):
    from trainer.pure import queue
    from trainer.pure.runs import pid_alive, read_status

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # inherited by the runner and its trainers
    monkeypatch.setenv("MLX_DISABLE_COMPILE", "1")
    out = tmp_path / "calls.jsonl"
    write_settings(tmp_path / "config", [sys.executable, str(RECORDER), str(out), "{name}", "{state}", "{val_loss}"])
    runs = tmp_path / "runs"
    short = ["training.steps_per_eval=0", "training.save_every=3", "training.iters=3"]
    long = ["training.steps_per_eval=0", "training.save_every=1000", "training.iters=100000"]
    queue.add(runs, queue.sweep_items(DEMO, {"training.seed": [1]}, overrides=short)
              + queue.sweep_items(DEMO, {"training.seed": [2]}, overrides=long))
    runner = queue.ensure_runner(runs)
    try:
        deadline = time.monotonic() + 240
        while True:
            second = queue.read(runs)["items"][1]
            if second.get("run_dir") and (read_status(second["run_dir"]) or {}).get("state") == "running":
                break
            assert time.monotonic() < deadline, queue.read(runs)
            time.sleep(0.3)
        os.kill(read_status(second["run_dir"])["pid"], signal.SIGKILL)  # no chance to write or notify
        while pid_alive(runner):
            assert time.monotonic() < deadline, "the runner did not finish the queue"
            time.sleep(0.3)
    finally:
        if pid_alive(runner):
            os.kill(runner, signal.SIGTERM)
    first, second = (Path(it["run_dir"]) for it in queue.read(runs)["items"])
    assert [c["argv"] for c in recorded(out)] == [[first.name, "completed", "none"], [second.name, "crashed", "none"]]
    assert f"notify_command: ran {sys.executable} for {second.name} crashed" in (runs / "queue.log").read_text()
