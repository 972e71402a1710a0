"""Pieces of the training loop, in process on the tiny built-in model."""

import json

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from trainer import data as D
from trainer import loop
from trainer.loop import prepare
from trainer.pure import metrics as M
from trainer.pure.config import config_from_dict
from trainer.pure.run_folder import RunFolder
from trainer.pure.states import RunState
from trainer.reporter import Reporter, truncate_metrics_after
from trainer.run_control import RunLog, StopFlag
from trainer.step import build_schedule, make_train_step


def lr_at(schedule, step):
    return float(schedule(mx.array(step))) if callable(schedule) else schedule


def test_schedules_warm_up_then_hold_or_decay():
    const = build_schedule(config_from_dict({"training": {"learning_rate": 1e-3, "warmup_steps": 10, "iters": 100}}, "t"))
    assert lr_at(const, 0) == pytest.approx(0.0)
    assert lr_at(const, 5) == pytest.approx(5e-4)
    assert lr_at(const, 10) == pytest.approx(1e-3) == lr_at(const, 90)
    cos = build_schedule(config_from_dict({"training": {"learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_steps": 10,
                                                        "iters": 110, "min_learning_rate": 1e-5}}, "t"))
    assert lr_at(cos, 10) == pytest.approx(1e-3, rel=1e-3)
    assert lr_at(cos, 60) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-2)
    assert lr_at(cos, 110) == pytest.approx(1e-5, rel=1e-2)
    assert build_schedule(config_from_dict({}, "t")) == 1e-3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    log = RunLog(tmp_path_factory.mktemp("log") / "train.log", echo=False)
    return lambda overrides: prepare(config_from_dict(overrides, "t"), log)


def one_update(prep, cfg_dict, batches):
    cfg = config_from_dict(cfg_dict, "t")
    # Plain SGD: the update is the gradient itself (Adam would amplify float noise to ±lr).
    opt = optim.SGD(learning_rate=1.0)
    opt.init(prep.model.trainable_parameters())
    step = make_train_step(prep.model, opt, cfg, use_scores=False)
    grad = None
    for k, pairs in enumerate(batches):
        b = D.collate(pairs, 0)
        _, grad = step(mx.array(b["inputs"]), mx.array(b["targets"]), mx.array(b["mask"]), mx.array(b["scores"]),
                       grad, k == len(batches) - 1)
    mx.eval(prep.model.parameters())
    return {k: np.array(v) for k, v in tree_flatten(prep.model.trainable_parameters())}


def test_gradient_accumulation_equals_one_big_batch(prepared):
    cfg = {"training": {"batch_size": 8}}
    first = prepared(cfg)
    pairs = first.train_pairs[:8]
    big = one_update(first, cfg, [pairs])
    second = prepared(cfg)  # same seed: the same initial adapters
    accum = one_update(second, {"training": {"batch_size": 4, "grad_accumulation_steps": 2}}, [pairs[:4], pairs[4:]])
    for k in big:
        assert np.allclose(big[k], accum[k], atol=1e-5), k


def test_incomplete_checkpoint_is_ignored(tmp_path):
    ckpts = tmp_path / "adapters" / "checkpoints"
    (ckpts / "step-0000010").mkdir(parents=True)
    (ckpts / "step-0000010" / "state.json").write_text(json.dumps({"step": 10}))
    (ckpts / ".tmp-step-0000020-123").mkdir()  # killed mid-write
    (ckpts / "step-0000030").mkdir()  # no state.json: not complete
    assert RunFolder(tmp_path).latest_checkpoint().name == "step-0000010"


def test_truncate_metrics_after_drops_lost_steps_and_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"event": "train", "step": s}) for s in range(1, 8)]
    path.write_text("\n".join(lines) + "\n" + '{"event": "tra')
    assert truncate_metrics_after(path, 4) == 4
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4]


class RecordingReporter(Reporter):
    """Keeps every report train() makes, in order, as (kind, step, ...) tuples."""

    def __init__(self):
        self.reports = []

    def log(self, message):
        self.reports.append(("log", message))

    def on_resume(self, checkpoint, step):
        self.reports.append(("resume", step, checkpoint))

    def on_start(self, step, total_steps, resumed):
        self.reports.append(("start", step, total_steps, resumed))

    def on_train(self, step, values):
        self.reports.append(("train", step, values))

    def on_val(self, step, values):
        self.reports.append(("val", step, values))

    def on_new_best(self, step, folder, val_loss):
        self.reports.append(("best", step, folder, val_loss))

    def on_checkpoint(self, step, path):
        self.reports.append(("checkpoint", step, path))

    def on_sample(self, step, index, prompt, completion):
        self.reports.append(("sample", step, index))

    def of(self, kind):
        return [r for r in self.reports if r[0] == kind]

    def steps(self, kind):
        return [r[1] for r in self.of(kind)]


def test_train_reports_only_through_its_reporter(tmp_path, monkeypatch):
    settings = {"orpo": {"beta": 0.25}, "training": {"steps_per_report": 2, "steps_per_eval": 2, "save_every": 4,
                                                     "val_batches": 1, "sample_prompts": 1, "sample_max_tokens": 2}}
    layout_betas = []
    choose = loop.choose_layouts
    monkeypatch.setattr(loop, "choose_layouts", lambda model, pairs, pad_id, beta, use_scores:
                        layout_betas.append(beta) or choose(model, pairs, pad_id, beta, use_scores))
    run = RunFolder(tmp_path)

    def train(iters, resume_from=None):
        cfg = config_from_dict({**settings, "training": {**settings["training"], "iters": iters}}, "t")
        reporter = RecordingReporter()
        state = loop.train(tmp_path, cfg, prepare(cfg, reporter.log), reporter, StopFlag(), resume_from)
        return state, reporter

    state, first = train(4)
    assert state == RunState.COMPLETED
    assert [r[0] for r in first.reports if r[0] != "log"][:2] == ["start", "val"]  # the untrained baseline first
    assert first.of("start") == [("start", 0, 4, False)]
    assert first.steps("train") == [2, 4] and first.steps("val") == [0, 2, 4]
    assert all(set(values) == set(M.TRAIN_METRICS) for _, _, values in first.of("train"))
    assert all(set(values) == set(M.VAL_METRICS) for _, _, values in first.of("val"))
    baseline = first.of("val")[0][2]
    assert first.of("best")[0] == ("best", 0, run.best, baseline[M.LOSS])
    assert baseline[M.REWARDS_CHOSEN] == pytest.approx(0.25 * baseline[M.LOGPS_CHOSEN], rel=1e-5)  # the run's beta
    assert [r[1:] for r in first.of("sample")] == [(0, 0), (2, 0), (4, 0)]
    assert first.of("checkpoint") == [("checkpoint", 4, run.checkpoint(4))]
    assert layout_betas == [0.25]
    # The run folder's reports are the reporter's business, not train()'s.
    assert not run.metrics.exists() and not run.status.exists() and not run.log.exists()

    state, resumed = train(6, resume_from=run.checkpoint(4))
    assert state == RunState.COMPLETED
    assert resumed.of("resume") == [("resume", 4, run.checkpoint(4))]
    assert resumed.of("start") == [("start", 4, 6, True)]
    assert resumed.steps("train") == [6] and resumed.steps("val") == [6]  # no second baseline
    assert resumed.of("checkpoint") == [("checkpoint", 6, run.checkpoint(6))]


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_no_half_folder(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import mlx.nn as nn
    import mlx.optimizers as optim
    import pytest

    from trainer import checkpoints
    from trainer.pure.run_folder import RunFolder

    model = nn.Linear(4, 4)
    optimizer = optim.AdamW(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    checkpoints.save_checkpoint(tmp_path, 5, model, optimizer, {})

    def full(*_args, **_kwargs):
        raise RuntimeError("[write] Unable to write 2560 bytes to file.")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoints.mx, "save_safetensors", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(1 << 20, 1 << 20, 4096))
    with pytest.raises(checkpoints.SaveError) as info:
        checkpoints.save_checkpoint(tmp_path, 10, model, optimizer, {})
    assert str(info.value).startswith("step 10: could not save a checkpoint: the disk is full (4,096 bytes free")
    assert str(info.value).endswith("the last complete checkpoint is step-0000005")
    run = RunFolder(tmp_path)
    assert run.checkpoint_leftovers() == [] and run.latest_checkpoint() == run.checkpoint(5)
