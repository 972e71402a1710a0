"""ORPO's loss (Hong et al., 2024) as pure functions of per-example log-probabilities.

`orpo_loss` takes the mean token log-prob of each chosen and rejected completion and returns
the scalar loss plus a dict of metrics under the names TRL's ORPO trainer uses, so curves from
our runs can be read next to TRL's. `sequence_logps` turns model logits into those mean
log-probs. Everything stays on the device: no `.item()`, so a compiled step never syncs here.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from trainer.pure import metrics as M

# A mean log-prob of exactly 0 makes log(1 - p) = -inf. Float32 resolves expm1 near 0 well,
# so clamping this close to 0 changes nothing a real model produces.
_LOGP_CEILING = -1e-12


def log1m_exp(x: mx.array) -> mx.array:
    """log(1 - exp(x)) for x < 0, accurate both near 0 and for very negative x.

    Near 0, 1 - exp(x) cancels catastrophically, so use log(-expm1(x)); far below, exp(x)
    underflows harmlessly and log1p(-exp(x)) is exact. The switch point -ln 2 is where both
    forms have the same error (Mächler, "Accurately computing log(1 - exp(-|a|))").
    """
    x = mx.minimum(x, _LOGP_CEILING)
    near_zero = x > -math.log(2.0)
    # Each branch is evaluated on inputs that are safe for it, so neither produces a NaN
    # that mx.where would still propagate through the gradient.
    safe_near = mx.where(near_zero, x, -1.0)
    safe_far = mx.where(near_zero, -1.0, x)
    return mx.where(near_zero, mx.log(-mx.expm1(safe_near)), mx.log1p(-mx.exp(safe_far)))


def log_odds(chosen_logps: mx.array, rejected_logps: mx.array) -> mx.array:
    """log(odds(chosen) / odds(rejected)) with odds(p) = p / (1 - p), from log-probs."""
    return (chosen_logps - rejected_logps) - (log1m_exp(chosen_logps) - log1m_exp(rejected_logps))


def orpo_loss(
    chosen_logps: mx.array,
    rejected_logps: mx.array,
    beta: float = 0.1,
    preference_score: mx.array | None = None,
) -> tuple[mx.array, dict[str, mx.array]]:
    """The ORPO objective: NLL on the chosen completion minus beta times the mean
    log-sigmoid of the log odds ratio.

    `preference_score` scales the chosen log-prob inside the odds only (mlx-lm-lora's
    convention); the NLL term and the reported rewards use the unscaled log-probs.
    """
    chosen_logps = chosen_logps.astype(mx.float32)
    rejected_logps = rejected_logps.astype(mx.float32)
    scored_chosen = chosen_logps
    if preference_score is not None:
        scored_chosen = chosen_logps * preference_score.astype(mx.float32)

    ratio = log_odds(scored_chosen, rejected_logps)
    # Each mean is computed once and reused: mx.compile merges identical expressions, and
    # returning two merged copies as separate outputs trips it (mlx 0.32: "_Map_base::at").
    mean_chosen = mx.mean(chosen_logps)
    mean_log_sig = mx.mean(nn.log_sigmoid(ratio))
    nll = -mean_chosen
    loss = nll - beta * mean_log_sig

    chosen_rewards = beta * chosen_logps
    rejected_rewards = beta * rejected_logps
    metrics = {
        M.LOSS: loss,
        M.NLL_LOSS: nll,
        M.LOG_ODDS_RATIO: mean_log_sig,
        M.LOG_ODDS_CHOSEN: mx.mean(ratio),
        M.REWARDS_CHOSEN: mx.mean(chosen_rewards),
        M.REWARDS_REJECTED: mx.mean(rejected_rewards),
        M.REWARDS_MARGINS: mx.mean(chosen_rewards - rejected_rewards),
        M.REWARDS_ACCURACIES: mx.mean((chosen_rewards > rejected_rewards).astype(mx.float32)),
        M.LOGPS_CHOSEN: mean_chosen,
        M.LOGPS_REJECTED: mx.mean(rejected_logps),
    }
    return loss, metrics


def token_logps(logits: mx.array, targets: mx.array) -> mx.array:
    """Log-prob of each target token under `logits` ([..., T, V] -> [..., T])."""
    return -nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none")


def sequence_logps(logits: mx.array, targets: mx.array, mask: mx.array) -> mx.array:
    """Mean log-prob of the scored (mask == 1) target tokens of each sequence."""
    mask = mask.astype(mx.float32)
    summed = (token_logps(logits, targets) * mask).sum(axis=-1)
    return summed / mx.maximum(mask.sum(axis=-1), 1.0)


def gathered_sequence_logps(hidden: mx.array, head, targets: mx.array, mask: mx.array,
                            index: mx.array, rows: mx.array, weights: mx.array) -> mx.array:
    """`sequence_logps`, projecting to the vocabulary only the positions that are scored.

    Prompts and padding are often most of a batch, and the vocabulary projection (with its
    softmax) is most of a small model's work; `index` lists the scored positions of the
    flattened [rows * T] batch (padded with weight-0 entries so shapes repeat), `rows` the
    sequence each belongs to. Same values as the full projection, to float rounding.
    """
    sums = scored_logp_sums(hidden, head, targets, index, rows, weights)
    return sums / mx.maximum(mask.astype(mx.float32).sum(axis=-1), 1.0)


def scored_logp_sums(hidden: mx.array, head, targets: mx.array, index: mx.array, rows: mx.array, weights: mx.array) -> mx.array:
    """Per-row sums of the log-probs of the positions `index` lists in the flattened
    [rows * T] batch (weight-0 entries pad the list), projecting only those positions."""
    flat = hidden.reshape(-1, hidden.shape[-1])[index]
    lp = token_logps(head(flat), targets.reshape(-1)[index]) * weights
    return mx.zeros((targets.shape[0],), dtype=lp.dtype).at[rows].add(lp)
