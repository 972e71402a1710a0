"""Batch layouts and the choice between them.

The plain layout runs every position through the vocabulary projection. Two fast layouts
run fewer: the gathered head projects only the scored positions, the shared prefix also
runs each pair's prompt once for both answers (trainer/shared_prefix.py). A fast layout is
used only where it gives the plain numbers on a real batch of the run's own model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from trainer import data as D
from trainer.model import output_head
from trainer.pure import metrics as M
from trainer.shared_prefix import collate_shared
from trainer.step import make_loss_fn
from trainer.team import Team


def to_device(batch: dict) -> tuple[mx.array, ...]:
    return tuple(mx.array(batch[k]) for k in ("inputs", "targets", "mask", "scores"))


def gather_to_device(batch: dict) -> tuple[mx.array, ...]:
    return tuple(mx.array(a) for a in batch["gather"])


def shared_to_device(batch: dict) -> tuple[mx.array, ...]:
    return tuple(mx.array(a) for a in batch["shared"])


def positions(batch: dict) -> int:
    """Token positions a batch runs through the model: what its layout costs."""
    return batch.get("positions", batch["inputs"].size)


def _layout_metrics(model: nn.Module, beta: float, use_scores: bool, arrays: tuple, fast: bool = True) -> dict | None:
    """Loss and metrics of one batch in eval mode, with the run's own beta: the rewards and
    margins scale with it, so another beta would compare other numbers than the run's. A fast
    layout that this model cannot drive (it raises) gives None; the plain reference is
    allowed to raise."""
    loss_fn = make_loss_fn(beta, use_scores)
    model.eval()
    try:
        loss, metrics = loss_fn(model, *arrays)
        return {M.LOSS: loss, **metrics}
    except Exception:  # noqa: BLE001 - such a model keeps the plain layout; a real fault shows there
        if not fast:
            raise
        return None
    finally:
        model.train()


def _same(reference: dict, got: dict | None) -> bool:
    return got is not None and all(bool(mx.allclose(reference[k], got[k], atol=1e-4, rtol=1e-4).item()) for k in reference)


def choose_layouts(model: nn.Module, pairs: list, pad_id: int, beta: float, use_scores: bool) -> tuple[bool, bool]:
    """(gathered head, shared prefix): each used only where its loss and every metric equal
    the plain full-logits ones on this real batch of the run's own model.

    The gathered head holds for mlx-lm's usual layout, not for a model that post-processes
    its logits (softcapping, scaling). The shared prefix needs attention that takes mlx-lm's
    cache and mask hooks and relative (rotary) positions; absolute position embeddings or
    attention code of the model's own give other numbers."""
    if output_head(model) is None:
        return False, False
    plain = D.collate(pairs, pad_id)
    reference = _layout_metrics(model, beta, use_scores, to_device(plain), fast=False)
    gathered = _same(reference, _layout_metrics(model, beta, use_scores, (*to_device(plain), gather_to_device(plain))))
    shared = collate_shared(pairs, pad_id) if gathered else None
    sharing = shared is not None and _same(reference, _layout_metrics(
        model, beta, use_scores, (*to_device(shared), gather_to_device(shared), shared_to_device(shared))))
    return gathered, sharing


@dataclass(frozen=True)
class BatchLayout:
    """The layouts a run may use (from choose_layouts); each batch then takes the one that
    runs fewer positions."""

    pad_id: int
    gathered: bool
    sharing: bool

    def host_batch(self, pairs: list, alongside: Sequence[list] = ()) -> dict:
        """The batch collated in the layout it takes: the shared prefix where that runs
        fewer positions, else the plain one (a "shared" key tells them apart).

        On a team, `alongside` holds what the other ranks run of the same global batch.
        Every rank then takes the same layout (by the positions of all the shares) and pads
        to the largest share's sizes, so all of them run a graph of one shape each step:
        the same work, done by all at the same time; none waits at the all-reduce for a rank
        that got longer rows or is compiling a shape the others already have."""
        groups = [pairs, *alongside]
        plain = [D.collate(g, self.pad_id) for g in groups]
        shared = [collate_shared(g, self.pad_id) for g in groups] if self.sharing else [None]
        sharing = all(s is not None for s in shared) and sum(map(positions, shared)) < sum(map(positions, plain))
        chosen = shared if sharing else plain
        if not alongside:
            return chosen[0]
        sizes = D.padded_sizes(chosen)
        if sizes == chosen[0]["sizes"]:  # this share is the largest already
            return chosen[0]
        return collate_shared(pairs, self.pad_id, sizes) if sharing else D.collate(pairs, self.pad_id, sizes)

    def device_batch(self, pairs: list, alongside: Sequence[list] = ()) -> tuple:
        """(device arrays, the layout's extra step arguments, the host batch)."""
        b = self.host_batch(pairs, alongside)
        if "shared" in b:
            return to_device(b), (gather_to_device(b), shared_to_device(b)), b
        return to_device(b), ((gather_to_device(b),) if self.gathered else ()), b

    def team_batch(self, pairs: Sequence, idx: Sequence[int], team: Team) -> tuple:
        """This rank's part of the global batch `idx` of `pairs`: (device arrays, extra step
        arguments, host batch, its share of the indices). A rank whose share is empty (an
        epoch's short last batch) runs the batch's first pair, to be weighted 0."""
        shares = [s or tuple(idx[:1]) for s in team.shares(idx)]
        runs = [[pairs[i] for i in s] for s in shares]
        mine = runs.pop(team.rank)
        return (*self.device_batch(mine, runs), team.share(idx))

    def notes(self, first_pairs: list) -> list[str]:
        """What the run log says about the choice, measured on the first batch."""
        first = D.collate(first_pairs, self.pad_id)
        share = first["gather"][2].sum() / first["mask"].size
        notes = ["scoring: only completion positions are projected onto the vocabulary "
                 f"({share:.0%} of the first batch's positions)" if self.gathered else
                 "scoring: this model's logits need the full projection (its head is not the usual layout)"]
        if self.sharing:
            notes.append("shared prefix: each pair's prompt runs through the model once for both answers")
        elif self.gathered and collate_shared(first_pairs, self.pad_id) is not None:
            notes.append("shared prefix: not used (this model's attention does not give the same numbers with it)")
        return notes
