"""One optimisation step and one evaluation pass: the ORPO loss over any batch layout, the
compiled train step (with gradient accumulation and clipping), its memory bound, the
learning-rate schedule and the per-step dropout seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from trainer.loss import gathered_sequence_logps, orpo_loss, sequence_logps
from trainer.model import output_head
from trainer.pure import metrics as M
from trainer.pure.config import Config
from trainer.shared_prefix import shared_sequence_logps
from trainer.team import Team


def build_schedule(cfg: Config) -> Callable[[mx.array], mx.array] | float:
    t = cfg.training
    if t.lr_schedule == "cosine":
        main = optim.cosine_decay(t.learning_rate, max(t.iters - t.warmup_steps, 1), t.min_learning_rate)
    else:
        main = None
    if t.warmup_steps:
        warm = optim.linear_schedule(0.0, t.learning_rate, t.warmup_steps)
        rest = main or (lambda _step: mx.array(t.learning_rate))
        return optim.join_schedules([warm, rest], [t.warmup_steps])
    return main or t.learning_rate


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def make_loss_fn(beta: float, use_scores: bool):
    def loss_fn(model, inputs, targets, mask, scores, gather=None, shared=None):
        if shared is not None:  # the shared-prefix layout (trainer/shared_prefix.py)
            logps = shared_sequence_logps(model, output_head(model), inputs, targets, gather, shared)
        elif gather is not None:  # only scored positions reach the vocabulary projection
            logps = gathered_sequence_logps(model.model(inputs), output_head(model), targets, mask, *gather)
        else:
            logps = sequence_logps(model(inputs), targets, mask)
        half = scores.shape[0]
        return orpo_loss(logps[:half], logps[half:], beta, scores if use_scores else None)

    return loss_fn


def make_train_step(model: nn.Module, optimizer: optim.Optimizer, cfg: Config, use_scores: bool, distributed: bool = False):
    """One micro-batch forward/backward, compiled with the model, optimizer and RNG state as
    implicit inputs and outputs (mlx-lm's pattern), so `mx.eval` once per step is the only
    host synchronisation.

    `distributed`: the step takes one more argument, `weight`, this rank's share of the
    micro-batch's pairs times the number of ranks (trainer/team.py); its gradient is scaled
    by it, and the accumulated gradient is averaged over the ranks before clipping and the
    update, so every rank applies the gradient of the whole global batch."""
    value_and_grad = nn.value_and_grad(model, make_loss_fn(cfg.orpo.beta, use_scores))
    accum = cfg.training.grad_accumulation_steps
    max_norm = cfg.training.max_grad_norm
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs, targets, mask, scores, prev_grad, do_update, gather=None, shared=None, weight=None):
        (_, metrics), grad = value_and_grad(model, inputs, targets, mask, scores, gather, shared)
        if weight is not None:
            grad = tree_map(lambda g: g * weight, grad)
        if prev_grad is not None:
            grad = tree_map(lambda a, b: a + b, grad, prev_grad)
        if do_update:
            if distributed:
                grad = nn.average_gradients(grad)
            if accum > 1:
                grad = tree_map(lambda g: g / accum, grad)
            if max_norm > 0:
                grad, _ = optim.clip_grad_norm(grad, max_norm)
            optimizer.update(model, grad)
            grad = None
        return metrics, grad

    return step


def _signature(arg: Any) -> Any:
    """What makes mx.compile trace again: array shapes, and the structure of the rest."""
    if isinstance(arg, mx.array):
        return arg.shape
    if isinstance(arg, (tuple, list)):
        return tuple(map(_signature, arg))
    if isinstance(arg, dict):
        return "tree"  # accumulated gradients: the trainable parameters' fixed shapes
    return arg


@dataclass(eq=False)
class _Generation:
    """One compiled function and the input shapes it has traced."""

    fn: Callable
    shapes: set = field(default_factory=set)
    last_used: int = 0


class ShapeBoundedStep:
    """The compiled step, holding at most MAX_COMPILED_SHAPES traced input shapes.

    mx.compile keeps one compiled graph per input shape for as long as the function lives,
    about 5 MB of host memory each for the 4-layer tiny model (more for deeper ones); a
    dataset whose batches have hundreds of distinct widths would grow the trainer by
    gigabytes. So the shapes live in up to GENERATIONS compiled functions of an equal share
    of the budget each: a new shape goes into the newest, and when that is full a fresh one
    starts; past GENERATIONS the function used least recently is dropped, and its graphs with
    it (only part of their host memory comes back: tests/bench/README.md, "step_shapes.py").
    More shapes than the budget then cost a quarter of the cached graphs at a time, not all
    of them (data.bucket keeps the shapes few)."""

    MAX_COMPILED_SHAPES = 32
    GENERATIONS = 4

    def __init__(self, build: Callable[[], Callable]):
        self.build = build
        self.generations: list[_Generation] = []
        self.holder: dict = {}  # shape key -> the generation that traced it
        self.calls = 0
        self.rebuilds = 0  # generations dropped with their graphs

    @staticmethod
    def signature(*args) -> tuple:
        """The key a call is compiled by: one per distinct shape of its inputs."""
        return tuple(map(_signature, args))

    def holds(self, *args) -> bool:
        """Whether a call with these arguments runs a graph already traced."""
        return self.signature(*args) in self.holder

    def __call__(self, *args):
        key = self.signature(*args)
        self.calls += 1
        generation = self.holder.get(key)
        if generation is None:
            generation = self._room()
            generation.shapes.add(key)
            self.holder[key] = generation
        generation.last_used = self.calls
        return generation.fn(*args)

    def _room(self) -> _Generation:
        per_generation = max(1, self.MAX_COMPILED_SHAPES // self.GENERATIONS)
        if self.generations and len(self.generations[-1].shapes) < per_generation:
            return self.generations[-1]
        if len(self.generations) >= self.GENERATIONS:
            stale = min(self.generations, key=lambda g: g.last_used)
            self.generations.remove(stale)
            for key in stale.shapes:
                del self.holder[key]
            self.rebuilds += 1
        self.generations.append(_Generation(self.build()))
        return self.generations[-1]


def evaluate(model: nn.Module, batches: list[tuple[int, tuple[mx.array, ...]]], cfg: Config, use_scores: bool,
             team: Team | None = None, total_pairs: int | None = None) -> dict[str, float]:
    """Pair-weighted means of the ORPO metrics over `(pairs, device arrays)` batches that
    were collated once for the whole run. On a team each rank holds its shares of the
    validation batches: the pair-weighted sums are added over the ranks and divided by
    `total_pairs`, the pairs of the whole validation set."""
    loss_fn = make_loss_fn(cfg.orpo.beta, use_scores)
    model.eval()
    totals = mx.zeros((len(M.ORPO_METRICS),))
    count = 0
    for n_pairs, arrays, *extra in batches:
        _, metrics = loss_fn(model, *arrays, *extra)
        totals = totals + mx.stack([metrics[k] for k in M.ORPO_METRICS]) * n_pairs
        count += n_pairs
        mx.eval(totals)
    if team is not None:
        totals = team.total(totals)
        count = total_pairs if total_pairs is not None else count
    model.train()
    values = totals.tolist()
    return {k: v / count for k, v in zip(M.ORPO_METRICS, values)}
