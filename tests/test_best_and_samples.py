"""Best-checkpoint tracking, early stopping, summary.json and sample generations."""

import json
import math
import signal

import mlx.core as mx
import numpy as np
import pytest
import tomllib
from trainer_helpers import DEMO, run_trainer

from trainer import loop
from trainer.checkpoints import BestTracker
from trainer.model import trainable_weights
from trainer.pure.config import apply_overrides, load_preset
from trainer.pure.events import read_events
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import create_run_dir, read_status


def events(run_dir, kind):
    return [e for e in read_events(run_dir / "metrics.jsonl") if e["event"] == kind]


def weights(path):
    return {k: np.array(v) for k, v in mx.load(str(path)).items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- bookkeeping


def test_best_tracker_counts_evaluations_without_a_new_best():
    b = BestTracker()
    assert not b.should_stop(2)
    assert b.update(0, 5.0) and (b.best_val_loss, b.best_step) == (5.0, 0)
    assert b.update(10, 4.0) and b.evals_without_improvement == 0
    assert not b.update(20, 4.0)  # equal is not better
    assert not b.should_stop(2) and b.should_stop(1)
    assert not b.update(30, math.nan)  # NaN is never a best, and counts as no improvement
    assert b.should_stop(2) and not b.should_stop(3) and not b.should_stop(0)  # 0 = off
    assert (b.best_val_loss, b.best_step, b.evals_without_improvement) == (4.0, 10, 2)
    assert b.update(40, 3.9) and b.evals_without_improvement == 0 and not b.should_stop(1)

    restored = BestTracker.from_state(json.loads(json.dumps(b.to_state())))
    assert restored == b
    assert BestTracker.from_state({}) == BestTracker()  # a checkpoint from before this feature
    first = BestTracker()
    assert not first.update(0, math.nan) and first.best_step is None


# ---------------------------------------------------------------------------- a real CLI run


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    proc = run_trainer(
        str(DEMO), "--runs-dir", str(runs),
        "--set", "training.iters=30", "--set", "training.steps_per_eval=10",
        "--set", "training.steps_per_report=10", "--set", "training.save_every=20",
    )
    assert proc.returncode == 0, proc.stderr
    return next(runs.iterdir())


def test_best_adapters_and_summary(cli_run):
    run_dir = cli_run
    val = events(run_dir, "val")
    assert [e["step"] for e in val] == [0, 10, 20, 30]
    best_val = min(val, key=lambda e: e["loss"])

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "completed" and summary["steps_done"] == 30 and summary["early_stopped"] is False
    assert summary["best_step"] == best_val["step"]
    assert summary["best_val_loss"] == pytest.approx(best_val["loss"])
    assert summary["final_val"]["step"] == 30 and summary["final_val"]["loss"] == pytest.approx(val[-1]["loss"])
    assert summary["final_train"]["step"] == 30 and "loss" in summary["final_train"]
    assert summary["wall_time_s"] > 0
    assert summary["checkpoints"] == {"latest_adapters": "adapters", "best_adapters": "adapters/best",
                                      "last_resumable": "adapters/checkpoints/step-0000030"}

    # A best checkpoint event at each new running minimum of the val loss, and only there.
    running, expected = math.inf, []
    for e in val:
        if e["loss"] < running:
            running, expected = e["loss"], expected + [e["step"]]
    best_events = [e for e in events(run_dir, "checkpoint") if e.get("best")]
    assert [e["step"] for e in best_events] == expected
    assert all(e["path"] == "adapters/best" for e in best_events)
    assert [e["step"] for e in events(run_dir, "checkpoint") if not e.get("best")] == [20, 30]

    state = json.loads((RunFolder(run_dir).latest_checkpoint() / "state.json").read_text())
    assert state["best_step"] == best_val["step"] and state["best_val_loss"] == pytest.approx(best_val["loss"])
    assert state["evals_without_improvement"] == sum(1 for e in val if e["step"] > best_val["step"])
    if best_val["step"] == 30:  # the best is the final state: both folders hold the same weights
        assert same_weights(weights(run_dir / "adapters/best/adapters.safetensors"),
                            weights(run_dir / "adapters/adapters.safetensors"))
    assert not any(p.name.startswith(".") for p in (run_dir / "adapters/best").iterdir())  # no temp files left
    assert events(run_dir, "status")[-1]["state"] == "completed"
    assert "early_stopped" not in events(run_dir, "status")[-1]


def test_best_adapters_load_in_mlx_lm(cli_run):
    from mlx_lm import generate, load

    base_path = tomllib.loads((cli_run / "config.toml").read_text())["model"]["resolved_path"]
    best_dir = cli_run / "adapters" / "best"
    assert json.loads((best_dir / "adapter_config.json").read_text())["fine_tune_type"] == "lora"
    model, tokenizer = load(base_path, adapter_path=str(best_dir))
    text = generate(model, tokenizer, prompt="What colour is snow?", max_tokens=8)
    assert isinstance(text, str)


def test_samples_at_each_evaluation(cli_run):
    samples = events(cli_run, "sample")
    val_steps = [e["step"] for e in events(cli_run, "val")]
    assert sorted({s["step"] for s in samples}) == val_steps
    prompts = None
    for step in val_steps:
        at = [s for s in samples if s["step"] == step]
        assert [s["index"] for s in at] == [0, 1]  # training.sample_prompts defaults to 2
        assert all(isinstance(s["prompt"], str) and s["prompt"].strip() for s in at)
        assert all(isinstance(s["completion"], str) for s in at)
        # The same validation prompts at every evaluation.
        prompts = prompts or [s["prompt"] for s in at]
        assert [s["prompt"] for s in at] == prompts
    # Greedy text may be empty when the model emits EOS first; the untrained model does not.
    assert any(s["completion"].strip() for s in samples)
    assert all(len(s["completion"]) < 32 * 40 for s in samples)  # bounded by sample_max_tokens


# ---------------------------------------------------------------------------- in process, scripted val losses


class ScriptedEval:
    """Stands in for loop.evaluate: returns the given losses in turn and keeps a copy of
    the trainable weights at each evaluation."""

    def __init__(self, losses):
        self.losses, self.snapshots = list(losses), []

    def __call__(self, model, batches, cfg, use_scores, team=None, total_pairs=None):
        self.snapshots.append({k: np.array(v) for k, v in trainable_weights(model).items()})
        loss = self.losses.pop(0)
        return {"loss": loss, "rewards/accuracies": 0.5, "rewards/margins": 0.0}


@pytest.fixture
def in_process(monkeypatch):
    """Run trainer.cli.run in this process (the tiny model, a few steps); signal handlers
    it installs are put back afterwards."""
    from trainer import cli

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def go(run_dir, overrides, losses, ckpt=None):
        scripted = ScriptedEval(losses)
        monkeypatch.setattr(loop, "evaluate", scripted)
        cfg = apply_overrides(load_preset(DEMO), ["training.steps_per_report=2", "training.sample_prompts=1",
                                                  "training.sample_max_tokens=4", *overrides])
        code = cli.run(cfg, run_dir, ckpt, resuming=ckpt is not None, echo=False)
        return code, scripted

    yield go
    for s, h in saved.items():
        signal.signal(s, h)


def test_patience_stops_early_and_keeps_the_best(tmp_path, in_process):
    run_dir = create_run_dir(tmp_path, "early")
    code, scripted = in_process(run_dir, ["training.iters=20", "training.steps_per_eval=2", "training.save_every=100",
                                          "training.patience=2"], [5.0, 4.0, 4.5, 4.0, 1.0])
    assert code == 0
    status = read_status(run_dir)
    assert status["state"] == "completed" and status["step"] == 6
    last = events(run_dir, "status")[-1]
    assert last["state"] == "completed" and last["early_stopped"] is True and last["best_step"] == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["early_stopped"] is True and summary["steps_done"] == 6 and summary["total_steps"] == 20
    assert (summary["best_step"], summary["best_val_loss"]) == (2, 4.0)
    assert summary["checkpoints"]["last_resumable"] == "adapters/checkpoints/step-0000006"
    assert "early stop" in (run_dir / "train.log").read_text()
    assert [e["step"] for e in events(run_dir, "val")] == [0, 2, 4, 6]
    assert [e["step"] for e in events(run_dir, "checkpoint") if e.get("best")] == [0, 2]
    # The best folder holds the weights evaluated at step 2, not the final ones.
    best = weights(run_dir / "adapters/best/adapters.safetensors")
    assert same_weights(best, scripted.snapshots[1])
    assert not same_weights(best, weights(run_dir / "adapters/adapters.safetensors"))


def test_resume_keeps_the_best_state(tmp_path, in_process):
    run_dir = create_run_dir(tmp_path, "resume")
    code, first = in_process(run_dir, ["training.iters=10", "training.steps_per_eval=5", "training.save_every=10"],
                             [5.0, 3.0, 4.0])
    assert code == 0
    state = json.loads((run_dir / "adapters/checkpoints/step-0000010/state.json").read_text())
    assert (state["best_val_loss"], state["best_step"], state["evals_without_improvement"]) == (3.0, 5, 1)
    best_at_5 = first.snapshots[1]
    assert same_weights(weights(run_dir / "adapters/best/adapters.safetensors"), best_at_5)

    # Work a crash lost may have written a newer best: the resume puts back the checkpoint's.
    mx.save_safetensors(str(run_dir / "adapters/best/adapters.safetensors"),
                        {k: mx.zeros(v.shape) for k, v in best_at_5.items()})
    ckpt = RunFolder(run_dir).latest_checkpoint()
    code, _ = in_process(run_dir, ["training.iters=20", "training.steps_per_eval=5", "training.save_every=10"],
                         [4.5, 3.5], ckpt=ckpt)
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["best_step"], summary["best_val_loss"], summary["steps_done"]) == (5, 3.0, 20)
    state = json.loads((run_dir / "adapters/checkpoints/step-0000020/state.json").read_text())
    assert (state["best_step"], state["evals_without_improvement"]) == (5, 3)
    assert same_weights(weights(run_dir / "adapters/best/adapters.safetensors"), best_at_5)
    assert [e["step"] for e in events(run_dir, "checkpoint") if e.get("best")] == [0, 5]
