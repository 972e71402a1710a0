"""Pieces of the training loop, in process on the tiny built-in model."""

import json
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from trainer import data as D
from trainer.pure.config import config_from_dict
from trainer.loop import (RunLog, build_schedule, latest_checkpoint, make_train_step, prepare,
                          truncate_metrics_after)


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
    assert latest_checkpoint(tmp_path).name == "step-0000010"


def test_truncate_metrics_after_drops_lost_steps_and_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"event": "train", "step": s}) for s in range(1, 8)]
    path.write_text("\n".join(lines) + "\n" + '{"event": "tra')
    assert truncate_metrics_after(path, 4) == 4
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4]
