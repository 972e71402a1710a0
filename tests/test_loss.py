"""The ORPO loss against an independent float64 implementation of the paper's formula."""

import math

import mlx.core as mx
import numpy as np
import pytest

from trainer.loss import log1m_exp, orpo_loss, sequence_logps


def reference(chosen, rejected, beta, scores=None):
    """Straight from the formula, in float64 with Python's math, no shared code."""
    chosen = [float(c) for c in chosen]
    rejected = [float(r) for r in rejected]
    scored = chosen if scores is None else [c * s for c, s in zip(chosen, scores)]

    def log1m_exp64(x):
        x = min(x, -1e-12)
        return math.log(-math.expm1(x)) if x > -math.log(2) else math.log1p(-math.exp(x))

    def log_sigmoid(x):
        return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))

    odds = [(c - r) - (log1m_exp64(c) - log1m_exp64(r)) for c, r in zip(scored, rejected)]
    ls = [log_sigmoid(o) for o in odds]
    n = len(chosen)
    nll = -sum(chosen) / n
    return {
        "loss": nll - beta * sum(ls) / n,
        "nll_loss": nll,
        "log_odds_ratio": sum(ls) / n,
        "log_odds_chosen": sum(odds) / n,
        "rewards/chosen": beta * sum(chosen) / n,
        "rewards/rejected": beta * sum(rejected) / n,
        "rewards/margins": beta * (sum(chosen) - sum(rejected)) / n,
        "rewards/accuracies": sum(c > r for c, r in zip(chosen, rejected)) / n,
        "logps/chosen": sum(chosen) / n,
        "logps/rejected": sum(rejected) / n,
    }


CASES = {
    "typical": ([-1.2, -0.7, -2.5, -0.9], [-1.9, -0.6, -3.1, -2.2]),
    "near_zero": ([-1e-6, -3e-5, -1e-4, -2e-3], [-5e-4, -1e-6, -0.01, -0.3]),
    "very_negative": ([-35.0, -60.0, -12.0, -80.0], [-40.0, -55.0, -90.0, -81.0]),
    "mixed": ([-1e-5, -50.0, -0.69, -0.7], [-45.0, -2e-6, -0.71, -0.69]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_scores", [False, True])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_orpo_loss_matches_float64_reference(case, with_scores, beta):
    chosen, rejected = CASES[case]
    scores = [1.0, 0.5, 0.9, 0.25] if with_scores else None
    loss, metrics = orpo_loss(
        mx.array(chosen), mx.array(rejected), beta=beta,
        preference_score=mx.array(scores) if scores else None,
    )
    expected = reference(chosen, rejected, beta, scores)
    assert loss.item() == pytest.approx(expected["loss"], rel=1e-4, abs=1e-4)
    assert set(metrics) == set(expected)
    for name, want in expected.items():
        got = metrics[name].item()
        assert math.isfinite(got), name
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4), name


def test_scores_scale_only_the_odds_not_the_nll():
    chosen, rejected = mx.array([-1.0, -2.0]), mx.array([-1.5, -1.5])
    _, plain = orpo_loss(chosen, rejected, beta=0.1)
    _, scored = orpo_loss(chosen, rejected, beta=0.1, preference_score=mx.array([0.5, 0.5]))
    assert scored["nll_loss"].item() == pytest.approx(plain["nll_loss"].item())
    assert scored["rewards/chosen"].item() == pytest.approx(plain["rewards/chosen"].item())
    # Halving the chosen log-prob makes the chosen completion look likelier: larger odds.
    assert scored["log_odds_chosen"].item() > plain["log_odds_chosen"].item()


def test_log1m_exp_has_finite_gradients_at_the_extremes():
    xs = mx.array([0.0, -1e-9, -1e-3, -0.6931, -0.7, -30.0, -200.0])
    values = log1m_exp(xs)
    grads = mx.grad(lambda x: log1m_exp(x).sum())(xs)
    assert np.all(np.isfinite(np.array(values)))
    assert np.all(np.isfinite(np.array(grads)))


def test_gradient_pushes_chosen_up_and_rejected_down():
    def loss_of(c, r):
        return orpo_loss(c, r, beta=0.5)[0]

    c, r = mx.array([-1.0, -2.0]), mx.array([-1.0, -2.0])
    gc, gr = mx.grad(loss_of, argnums=(0, 1))(c, r)
    assert np.all(np.array(gc) < 0)  # descending the loss raises chosen log-probs
    assert np.all(np.array(gr) > 0)  # and lowers rejected ones


def test_sequence_logps_averages_only_masked_tokens():
    logits = mx.log(mx.array([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
    targets = mx.array([[0, 0, 1]])
    mask = mx.array([[0.0, 1.0, 1.0]])
    got = sequence_logps(logits, targets, mask).item()
    assert got == pytest.approx((math.log(0.9) + math.log(0.8)) / 2, rel=1e-5)


def test_loss_returns_exactly_the_registry_orpo_metrics():
    from trainer.pure.metrics import BY_NAME, ORPO, ORPO_METRICS

    chosen, rejected = mx.array([-0.5, -1.0]), mx.array([-1.5, -0.7])
    _, metrics = orpo_loss(chosen, rejected, 0.1)
    assert tuple(metrics) == ORPO_METRICS
    assert all(BY_NAME[name].kind == ORPO for name in metrics)
