"""Memory before and while training, through the real `orpo-train`: the estimate command on
the demo (text and JSON), the refusal of a run that cannot fit (a small device simulated by
the ORPO_TRAIN_DEVICE_MEMORY_GB hook) and `--force` over it, and MLX's memory limits."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from trainer_helpers import DEMO, ORPO_TRAIN, REPO

from trainer.pure.config import apply_overrides, config_from_dict
from trainer.pure.events import read_events
from trainer.pure.runs import read_status
from trainer.pure.states import RunState
from trainer.pure.system_memory import DEVICE_MEMORY_ENV, DeviceMemory, system_memory, verdict
from trainer.pure.trainer_process import ExitCode, estimate_argv, resume_argv, train_argv

SHORT = ["--set", "training.iters=2", "--set", "training.steps_per_eval=0", "--set", "training.save_every=100"]


def trainer(*args: str, device_gb: float | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != DEVICE_MEMORY_ENV}
    if device_gb is not None:
        env[DEVICE_MEMORY_ENV] = str(device_gb)
    return subprocess.run([*ORPO_TRAIN, *args], capture_output=True, text=True, timeout=240, cwd=REPO, env=env)


def test_estimate_of_the_demo_as_json_and_text():
    proc = trainer("estimate", str(DEMO), "--json", device_gb=8)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # The demo's pairs are far shorter than max_seq_length (256): its batches pad to 32 or
    # fewer positions, and the estimate at those lengths is a small part of the worst case.
    assert 0.005 < report["peak_memory_gb"] < report["peak_memory_gb_worst"] / 4
    assert report["peak_set_by"] == "a train step"
    assert report["longest_batch"]["positions"] <= 16 * 32
    assert report["device_memory_gb"] == 8 and report["device_memory_source"] == f"({DEVICE_MEMORY_ENV})"
    assert report["fits"] is True and report["error"] is None
    doubled = json.loads(trainer("estimate", str(DEMO), "--json", "--set", "training.batch_size=16").stdout)
    assert doubled["peak_memory_gb"] > 1.5 * report["peak_memory_gb"]

    text = trainer("estimate", str(DEMO), device_gb=8)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    real = next(ln for ln in lines if "peak at the data's real lengths" in ln)
    worst = next(ln for ln in lines if "worst case at max_seq_length" in ln)
    assert f"{report['peak_memory_gb'] * 1e3:.1f} MB" in real
    assert f"{report['peak_memory_gb_worst'] * 1e3:.1f} MB" in worst
    assert any(ln.strip().startswith("fits: est") and "of 8.00 GB (ORPO_TRAIN_DEVICE_MEMORY_GB)" in ln for ln in lines)


def test_estimate_of_a_bad_preset_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nbatch_size = 0\n")
    proc = trainer("estimate", str(bad))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "training.batch_size" in proc.stderr and proc.stderr.strip().count("\n") == 0
    as_json = json.loads(trainer("estimate", str(bad), "--json").stdout)
    assert "training.batch_size" in as_json["error"] and as_json["peak_memory_gb"] is None


def test_a_run_that_cannot_fit_is_refused_with_both_numbers_and_force_trains_it(tmp_path):
    runs = tmp_path / "runs"
    estimate = json.loads(trainer("estimate", str(DEMO), "--json").stdout)["peak_memory_gb"]
    small = estimate / 2  # a device with half the memory the demo needs
    proc = trainer(str(DEMO), "--runs-dir", str(runs), *SHORT, device_gb=small)
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("orpo-train: does not fit: est ")
    assert f"{estimate * 1e3:.1f} MB" in line and f"more than the {small * 1e3:.1f} MB ({DEVICE_MEMORY_ENV})" in line
    assert "--force" in line
    run_dir = Path(proc.stdout.splitlines()[0])
    status = read_status(run_dir)
    assert status["state"] == RunState.FAILED and status["error"] in line
    assert [e["event"] for e in read_events(run_dir / "metrics.jsonl")] == ["status"]  # the failure, no step

    forced = trainer(str(DEMO), "--runs-dir", str(runs), *SHORT, "--force", device_gb=small)
    assert forced.returncode == ExitCode.OK, forced.stderr
    run_dir = Path(forced.stdout.splitlines()[0])
    assert read_status(run_dir)["state"] == RunState.COMPLETED
    assert "does not fit" in (run_dir / "train.log").read_text() and "--force: training anyway" in (run_dir / "train.log").read_text()


def test_memory_limits_reach_mlx_and_the_log(tmp_path):
    proc = trainer(str(DEMO), "--runs-dir", str(tmp_path), *SHORT, "--set", "training.memory_limit_gb=3",
                   "--set", "training.cache_limit_gb=0.25", device_gb=8)
    assert proc.returncode == 0, proc.stderr
    log = (Path(proc.stdout.splitlines()[0]) / "train.log").read_text()
    assert "memory: memory limit 3 GB, cache limit 0.25 GB" in log
    assert re.search(r"memory: fits: est [\d.]+ MB at the data's real lengths of 8\.00 GB", log)


def test_apply_limits_calls_mlx_with_the_configured_values_and_the_wired_limit_on_metal(monkeypatch):
    import mlx.core as mx

    from trainer import memory

    calls = []
    for name in ("set_wired_limit", "set_memory_limit", "set_cache_limit"):
        monkeypatch.setattr(mx, name, lambda n, name=name: calls.append((name, n)) or 0)
    monkeypatch.setattr(memory, "on_metal", lambda: True)
    monkeypatch.setattr(mx, "device_info", lambda: {"max_recommended_working_set_size": 12_000_000_000})
    said = []
    cfg = apply_overrides(config_from_dict({}, "t"), ["training.memory_limit_gb=20", "training.cache_limit_gb=0"])
    memory.apply_limits(cfg, said.append)
    assert calls == [("set_wired_limit", 12_000_000_000), ("set_memory_limit", 20_000_000_000), ("set_cache_limit", 0)]
    assert said == ["memory: wired limit 12.00 GB (the recommended working set), memory limit 20 GB, cache limit 0 GB"]

    calls.clear()
    said.clear()
    monkeypatch.setattr(memory, "on_metal", lambda: False)
    memory.apply_limits(config_from_dict({}, "t"), said.append)  # CPU, nothing set: MLX's defaults
    assert calls == [] and said[0].startswith("memory: MLX's defaults (memory limit ")
    # On Metal the device's memory is the recommended working set, unless the test hook is set.
    monkeypatch.setattr(memory, "on_metal", lambda: True)
    monkeypatch.delenv(DEVICE_MEMORY_ENV, raising=False)
    assert memory.device_memory() == DeviceMemory(12e9, "Metal recommended working set")


@pytest.mark.parametrize("key,value", [("memory_limit_gb", -1), ("memory_limit_gb", 0.001), ("cache_limit_gb", -0.5)])
def test_limit_keys_are_range_checked(tmp_path, key, value):
    proc = trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", f"training.{key}={value}")
    assert proc.returncode == ExitCode.BAD_INPUT and f"training.{key}" in proc.stderr


def test_system_memory_and_the_verdict(monkeypatch):
    monkeypatch.setenv(DEVICE_MEMORY_ENV, "2.5")
    assert system_memory() == DeviceMemory(2.5e9, f"({DEVICE_MEMORY_ENV})")
    monkeypatch.delenv(DEVICE_MEMORY_ENV)
    here = system_memory()
    assert here is not None and here.bytes > 0  # /proc/meminfo's MemAvailable on Linux
    device = DeviceMemory(2e9, "available RAM")
    assert verdict(3e8, device, "worst case at max_seq_length") == \
        "fits: est 300.0 MB worst case at max_seq_length of 2.00 GB available RAM"
    assert verdict(3e9, device, "at the data's real lengths") == \
        "does not fit: est 3.00 GB at the data's real lengths, more than the 2.00 GB available RAM"


def test_launchers_can_pass_force():
    assert train_argv("p.toml", force=True)[-1] == "--force" and "--force" not in train_argv("p.toml")
    assert resume_argv("runs/x", force=True)[-1] == "--force"
    assert estimate_argv("p.toml", ["training.batch_size=4"])[-4:] == ["p.toml", "--set", "training.batch_size=4", "--json"]
