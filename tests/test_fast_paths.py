"""Speed paths must not change the numbers: each is checked against the plain reference on
the same batch (issue: loss equal to 1e-4)."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from trainer import data as D
from trainer.config import config_from_dict
from trainer.loop import RunLog, gather_to_device, make_loss_fn, prepare, to_device, use_gathered_head


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    log = RunLog(tmp_path_factory.mktemp("log") / "train.log", echo=False)
    return prepare(config_from_dict({"finetune": {"dropout": 0.0}}, "t"), log)


def batches(prep, n=3, size=8):
    groups = D.make_batches(prep.train_pairs, size)
    return [D.collate([prep.train_pairs[i] for i in g], 0) for g in (groups[0], groups[len(groups) // 2], groups[-1])][:n]


def test_gathered_projection_equals_full_projection(prep):
    loss_fn = make_loss_fn(0.1, False)
    grad_fn = nn.value_and_grad(prep.model, loss_fn)
    for b in batches(prep):
        (plain_loss, plain_metrics), plain_grad = grad_fn(prep.model, *to_device(b))
        (fast_loss, fast_metrics), fast_grad = grad_fn(prep.model, *to_device(b), gather_to_device(b))
        assert abs(plain_loss.item() - fast_loss.item()) < 1e-4
        for k in plain_metrics:
            assert abs(plain_metrics[k].item() - fast_metrics[k].item()) < 1e-4, k
        for (k, g1), (_, g2) in zip(tree_flatten(plain_grad), tree_flatten(fast_grad)):
            assert np.allclose(np.array(g1), np.array(g2), atol=1e-5), k


def test_gather_covers_exactly_the_scored_tokens(prep):
    b = batches(prep, n=1)[0]
    index, rows, weights = b["gather"]
    assert weights.sum() == b["mask"].sum() and len(index) % D.GATHER_MULTIPLE == 0
    flat_mask = b["mask"].reshape(-1)
    assert flat_mask[index[weights > 0]].all()
    assert (rows[weights > 0] == index[weights > 0] // b["mask"].shape[1]).all()


def test_trainer_uses_the_fast_path_only_when_it_agrees(prep):
    b = batches(prep, n=1)[0]
    assert use_gathered_head(prep.model, b, False)

    class Softcapped(nn.Module):
        """A model whose logits are post-processed: the gathered head would differ."""

        def __init__(self, inner):
            super().__init__()
            self.model = inner.model
            self.inner = inner

        def __call__(self, x):
            return 30.0 * mx.tanh(self.inner(x) / 30.0)

    assert not use_gathered_head(Softcapped(prep.model), b, False)
