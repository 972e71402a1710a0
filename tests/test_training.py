"""Real training runs of the tiny built-in model through the `orpo-train` CLI."""

import json
import signal

import mlx.core as mx
import numpy as np
import pytest
from trainer_helpers import DEMO, first_line, run_trainer, start_trainer, train_steps, wait_for_step

from trainer.pure.events import read_events
from trainer.pure.runs import effective_state, read_status


def events(run_dir, kind):
    return [e for e in read_events(run_dir / "metrics.jsonl") if e["event"] == kind]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    proc = run_trainer(
        str(DEMO), "--runs-dir", str(runs),
        "--set", "training.iters=40", "--set", "training.steps_per_report=5",
        "--set", "training.steps_per_eval=20", "--set", "training.save_every=20",
    )
    assert proc.returncode == 0, proc.stderr
    return runs, proc


def test_short_run_learns_and_writes_the_run_directory(short_run):
    runs, proc = short_run
    run_dir = runs / proc.stdout.splitlines()[0]
    run_dir = run_dir if run_dir.is_dir() else next(runs.iterdir())
    assert proc.stdout.splitlines()[0] == str(run_dir)
    status = read_status(run_dir)
    assert status["state"] == "completed" and status["step"] == 40 == status["total_steps"]

    train = events(run_dir, "train")
    assert [e["step"] for e in train] == list(range(5, 45, 5))
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    assert train[-1]["log_odds_chosen"] > train[0]["log_odds_chosen"]
    for name in ("nll_loss", "log_odds_ratio", "rewards/margins", "rewards/accuracies", "logps/chosen",
                 "logps/rejected", "learning_rate", "tokens_per_second", "pairs_per_second", "peak_memory_gb",
                 "active_memory_gb", "cache_memory_gb", "rss_gb"):
        assert name in train[-1], name
    last = train[-1]
    # MLX's live arrays never exceed its peak; a Python process with MLX loaded holds tens of MB.
    assert 0 < last["active_memory_gb"] <= last["peak_memory_gb"]
    assert 0.02 < last["rss_gb"] < 64
    assert last["cache_memory_gb"] >= 0
    val = events(run_dir, "val")
    assert [e["step"] for e in val] == [0, 20, 40]
    assert val[-1]["loss"] < val[0]["loss"]
    assert val[-1]["rewards/margins"] > val[0]["rewards/margins"]
    # Periodic (resumable) checkpoints; the best-adapters events (best: true) are tested in test_best_and_samples.
    assert [e["step"] for e in events(run_dir, "checkpoint") if not e.get("best")] == [20, 40]
    assert "step 40/40" in (run_dir / "train.log").read_text()
    config = (run_dir / "config.toml").read_text()
    assert "resolved_path" in config and "iters = 40" in config


def test_adapters_load_in_mlx_lm_and_change_the_model(short_run):
    import tomllib
    from mlx_lm import generate, load

    runs, _ = short_run
    run_dir = next(runs.iterdir())
    base_path = tomllib.loads((run_dir / "config.toml").read_text())["model"]["resolved_path"]
    adapted, tokenizer = load(base_path, adapter_path=str(run_dir / "adapters"))
    base, _ = load(base_path)
    messages = [{"role": "user", "content": "What colour is snow?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = generate(adapted, tokenizer, prompt=prompt, max_tokens=12)
    assert isinstance(text, str) and text
    tokens = mx.array([tokenizer.encode(prompt)])
    assert not np.allclose(np.array(adapted(tokens)), np.array(base(tokens)), atol=1e-4)


def test_sigint_stops_cleanly_and_resume_continues_the_step_sequence(tmp_path):
    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "training.iters=500",
                         "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0")
    run_dir = first_line(proc)
    wait_for_step(run_dir, 3, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    status = read_status(run_dir)
    stopped_at = status["step"]
    assert status["state"] == "stopped" and stopped_at >= 3
    assert (run_dir / "adapters" / "adapters.safetensors").is_file()
    assert (run_dir / "adapters" / "checkpoints" / f"step-{stopped_at:07d}").is_dir()
    assert "--resume" in proc.stderr.read()

    done = run_trainer("--resume", str(run_dir), "--set", f"training.iters={stopped_at + 4}")
    assert done.returncode == 0, done.stderr
    assert train_steps(run_dir) == list(range(1, stopped_at + 5))
    assert read_status(run_dir)["state"] == "completed"


def test_kill_9_leaves_a_crashed_run_that_resumes_from_its_checkpoint(tmp_path):
    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "training.iters=500",
                         "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0",
                         "--set", "training.save_every=4")
    run_dir = first_line(proc)
    wait_for_step(run_dir, 6, proc)
    proc.kill()
    proc.wait()
    assert effective_state(read_status(run_dir)) == "crashed"
    lost = max(train_steps(run_dir))
    assert lost >= 6

    done = run_trainer("--resume", str(run_dir), "--set", f"training.iters={lost + 2}")
    assert done.returncode == 0, done.stderr
    assert train_steps(run_dir) == list(range(1, lost + 3))  # lost steps redone, no duplicates
    log = (run_dir / "train.log").read_text()
    assert "resumed from step-0000004" in log or f"resumed from step-{(lost // 4) * 4:07d}" in log


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    common = ["--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0",
              "--set", "training.save_every=100", "--set", "finetune.dropout=0.1"]
    whole = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "a"), "--set", "training.iters=8", *common)
    half = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "b"), "--set", "training.iters=4", *common)
    assert whole.returncode == 0 and half.returncode == 0, whole.stderr + half.stderr
    run_b = next((tmp_path / "b").iterdir())
    rest = run_trainer("--resume", str(run_b), "--set", "training.iters=8")
    assert rest.returncode == 0, rest.stderr
    run_a = next((tmp_path / "a").iterdir())
    loss_a = [e["loss"] for e in events(run_a, "train")]
    loss_b = [e["loss"] for e in events(run_b, "train")]
    assert np.allclose(loss_a, loss_b, atol=1e-5), (loss_a, loss_b)
    wa = mx.load(str(run_a / "adapters" / "adapters.safetensors"))
    wb = mx.load(str(run_b / "adapters" / "adapters.safetensors"))
    for k in wa:
        assert np.allclose(np.array(wa[k]), np.array(wb[k]), atol=1e-6), k


def test_nan_loss_fails_the_run_with_a_clear_line(tmp_path):
    """A base model with a NaN weight (as from a corrupt download) makes the real loss NaN."""
    import shutil

    from trainer.builtin import resolve_builtin_model

    poisoned = tmp_path / "poisoned-model"
    shutil.copytree(resolve_builtin_model("builtin:tiny"), poisoned)
    weights = mx.load(str(poisoned / "model.safetensors"))
    key = next(k for k in sorted(weights) if k.endswith("mlp.down_proj.weight"))
    weights[key] = mx.full(weights[key].shape, float("nan"))
    mx.save_safetensors(str(poisoned / "model.safetensors"), weights)

    proc = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "runs"), "--set", f"model.path={poisoned}",
                       "--set", "training.iters=20", "--set", "training.steps_per_eval=0")
    assert proc.returncode == 1
    run_dir = next((tmp_path / "runs").iterdir())
    status = read_status(run_dir)
    assert status["state"] == "failed" and "loss became nan at step 1" in status["error"]
    assert proc.stderr.strip().count("\n") == 0 and "loss became nan" in proc.stderr
    assert events(run_dir, "train")[-1]["step"] == 1  # the bad values are on record
    assert json.loads((run_dir / "status.json").read_text())["error"] == status["error"]
