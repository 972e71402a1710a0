"""The ranks training one run together (data parallelism on MLX's own distributed engine).

Each global batch is built exactly as on one process (trainer/data.py: a pure function of
(seed, step)); every rank takes a strided share of it (pairs are sorted by length inside a
batch, so striding gives each rank rows of similar lengths and similar work). The loss is a
mean over the batch's pairs, so a rank's gradient is weighted by its share of the pairs and
`mlx.nn.average_gradients` then yields the gradient of the whole batch's mean, exactly, even
when the shares are uneven (the short last batch of an epoch). Metrics travel the same way:
each rank sums its share-weighted means, and one `all_sum` per step gives every rank the
numbers one process would have computed on the whole batch.

A single process is a team of one: no communication, and the compiled step is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from trainer.pure.trainer_process import LAUNCHER_PID_ENV, RANKS_HERE_ENV, rank_from_env


@dataclass(frozen=True)
class Team:
    rank: int = 0
    size: int = 1
    group: Any = None
    here: int = 1  # ranks sharing this machine's memory: all of them when our launcher started them
    pids: tuple[int, ...] = ()  # every rank's pid, by rank, when all of them run on this machine

    @property
    def leader(self) -> bool:
        """Rank 0: the only rank that writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, idx: Sequence[int]) -> tuple[int, ...]:
        return tuple(idx[self.rank :: self.size])

    def shares(self, idx: Sequence[int]) -> list[tuple[int, ...]]:
        """Every rank's share, by rank."""
        return [tuple(idx[r :: self.size]) for r in range(self.size)]

    def total(self, values: mx.array) -> mx.array:
        """The element-wise sum over ranks (lazy; evaluated with the step)."""
        if not self.distributed:
            return values
        return mx.distributed.all_sum(values, group=self.group)

    def barrier(self) -> None:
        if self.distributed:
            mx.eval(mx.distributed.all_sum(mx.array(1.0), group=self.group))


def join(backend: str = "any") -> Team:
    """The team this process belongs to: the group `mlx.launch` (or our own launcher) set
    up through the environment, or a team of one when there is none."""
    if rank_from_env(os.environ) is None:
        return Team()
    group = mx.distributed.init(strict=True, backend=backend)
    # Our launcher says how many ranks share each machine; mlx.launch starts one per entry.
    if os.environ.get(RANKS_HERE_ENV, "").isdigit():
        here = int(os.environ[RANKS_HERE_ENV])
    else:
        here = group.size() if LAUNCHER_PID_ENV in os.environ else 1
    # A collective: every rank takes part, whatever it then keeps (ranks on several hosts may
    # count `here` differently, and a rank that skipped it would leave the others waiting).
    pids = _pids(group)
    if here != group.size():
        pids = ()
    return Team(group.rank(), group.size(), group, here, pids)


def _pids(group) -> tuple[int, ...]:
    """Every rank's pid, learnt in one all_sum, so that rank 0 can record them for whoever
    watches the run (a pid only means something on the machine it runs on)."""
    mine = mx.zeros((group.size(),), dtype=mx.int32)
    mine[group.rank()] = os.getpid()
    return tuple(int(p) for p in mx.distributed.all_sum(mine, group=group).tolist())
