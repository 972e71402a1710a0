"""Chosen and rejected share their prompt: run it through the model once per pair.

A preference pair is two sequences that start with the same tokens (the prompt, and often
the first tokens of both answers). The plain batch runs that shared prefix twice. Here the
prefix of every pair goes through the model once, its per-layer keys and values are kept,
and both continuations (chosen and rejected) attend to them. Gradients flow back through the
kept keys and values into the prefix pass, so the loss, the metrics and the gradients are
those of the plain batch, to float rounding; `trainer.layouts` checks that on a real batch
before using it and keeps the plain layout for a model where it does not hold.

Layout, for B pairs with shared-prefix lengths k_b:
- prefix [B, P]: each pair's first k_b input tokens, left-padded to a common P, so every
  continuation starts at position P. Token j of pair b sits at position P - k_b + j in both
  passes, so rotary position embeddings see the same distances as in the plain batch;
  padding is masked out as a key (a pad query sees only itself, which keeps it finite).
- continuations: chosen [B, Cc] and rejected [B, Cr] from input k_b on, right-padded, as
  two passes over the same kept prefix.
The prefix may hold scored tokens (answers that start alike, flat rows with a common start):
those are projected once and counted for both rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np

from trainer.data import Pair, bucket, pad_rows, scored_positions
from trainer.loss import scored_logp_sums

# Widths and scored-position counts go up data.bucket's ladder from this floor. Exact sizes
# (a floor of 1 and no ladder) gave the demo 54 distinct shapes in its 54 batches, more than
# step.ShapeBoundedStep keeps, so nearly every step traced and compiled its graph again
# (~1.4x the CPU of a cached step); the ladder from 4 gives it 22 (and 23 to each of two
# ranks) for 12% more positions. Measured in tests/bench/README.md, "step_shapes.py".
SHARED_PAD_MULTIPLE = 4


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def shared_length(seq_c: Sequence[int], seq_r: Sequence[int]) -> int:
    """How many input positions of a pair can be computed once.

    Input j's hidden state depends on tokens 0..j and its log-prob on token j+1, so with L
    tokens in common positions j <= L-2 agree in both; each continuation keeps at least one
    position so neither row is empty.
    """
    common = _common_prefix(seq_c, seq_r)
    return max(0, min(common - 1, len(seq_c) - 2, len(seq_r) - 2))


def collate_shared(pairs: Sequence[Pair], pad_id: int, at_least: dict[str, int] | None = None) -> dict | None:
    """The batch in the shared-prefix layout, or None when no pair has a prefix to share.

    `inputs`/`targets`/`mask`/`gather` hold the chosen continuations; `shared` the prefix
    (tokens, left padding, per-row scored counts), the rejected continuations and, when the
    prefix holds scored tokens, their targets and positions. Chosen and rejected
    continuations are separate passes, each padded only to its own longest row: preferred
    answers are often much longer than rejected ones, and padding one to the other is waste.
    `at_least` (from `data.padded_sizes` of other batches) pads further, to give this batch
    the same shapes as theirs; a "prefix_gather" there adds the prefix's scored positions
    (all of weight 0) even when none of these pairs has any.
    """
    at_least = at_least or {}
    seqs_c = [p.prompt + p.chosen for p in pairs]
    seqs_r = [p.prompt + p.rejected for p in pairs]
    starts = [max(len(p.prompt) - 1, 0) for p in pairs]  # first scored input position
    ks = [shared_length(c, r) for c, r in zip(seqs_c, seqs_r)]
    if max(ks) == 0:
        return None
    B = len(pairs)
    P = max(bucket(max(ks), SHARED_PAD_MULTIPLE), at_least.get("prefix", 0))
    prefix = np.full((B, P), pad_id, dtype=np.int32)
    p_targets = np.full((B, P), pad_id, dtype=np.int32)
    p_mask = np.zeros((B, P), dtype=np.float32)
    pads = np.zeros(B, dtype=np.int32)
    for b, (seq, k, start) in enumerate(zip(seqs_c, ks, starts)):
        pad = P - k
        pads[b] = pad
        prefix[b, pad:] = seq[:k]
        p_targets[b, pad:] = seq[1 : k + 1]
        if start < k:
            p_mask[b, pad + start :] = 1.0

    cont_starts = [start - k for start, k in zip(starts, ks)]
    c_inputs, c_targets, c_mask = pad_rows([s[k:] for s, k in zip(seqs_c, ks)], cont_starts, pad_id, SHARED_PAD_MULTIPLE,
                                           at_least.get("width", 0))
    r_inputs, r_targets, r_mask = pad_rows([s[k:] for s, k in zip(seqs_r, ks)], cont_starts, pad_id, SHARED_PAD_MULTIPLE,
                                           at_least.get("rejected_width", 0))
    counts = np.concatenate([c_mask.sum(axis=1), r_mask.sum(axis=1)]) + np.tile(p_mask.sum(axis=1), 2)
    gather = scored_positions(c_mask, SHARED_PAD_MULTIPLE, at_least.get("gather", 0))
    r_gather = scored_positions(r_mask, SHARED_PAD_MULTIPLE, at_least.get("rejected_gather", 0))
    shared = [prefix, pads, counts.astype(np.float32), r_inputs, r_targets, *r_gather]
    sizes = {"prefix": P, "width": c_inputs.shape[1], "rejected_width": r_inputs.shape[1],
             "gather": len(gather[0]), "rejected_gather": len(r_gather[0])}
    if p_mask.any() or "prefix_gather" in at_least:
        p_gather = scored_positions(p_mask, SHARED_PAD_MULTIPLE, at_least.get("prefix_gather", 0))
        shared += [p_targets, *p_gather]
        sizes["prefix_gather"] = len(p_gather[0])
    return {
        "inputs": c_inputs,
        "targets": c_targets,
        "mask": c_mask,
        "scores": np.array([p.score for p in pairs], dtype=np.float32),
        "tokens": int(sum(len(s) for s in seqs_c + seqs_r)),  # as data.collate counts them
        "gather": gather,
        "shared": tuple(shared),
        "positions": prefix.size + c_inputs.size + r_inputs.size,
        "sizes": sizes,
    }


class PrefixKV:
    """A per-layer key/value store that mlx-lm's attention uses as its cache: the prefix
    pass stores its keys and values; each continuation pass (chosen, then rejected) gets
    them prepended to its own. Concatenation (not in-place writes) keeps it differentiable."""

    def __init__(self, pads: mx.array, width: int):
        self.pads = pads
        self.width = width
        self.offset = 0
        self.keys: mx.array | None = None
        self.values: mx.array | None = None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None:
            self.keys, self.values = keys, values
            self.offset = keys.shape[2]
            return keys, values
        return mx.concatenate([self.keys, keys], axis=2), mx.concatenate([self.values, values], axis=2)

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        """Boolean [rows, 1, n, keys]: causal, with the prefix padding masked out as a key."""
        before = 0 if self.keys is None else self.width
        q = mx.arange(before, before + n)[:, None]
        k = mx.arange(before + n)[None]
        allowed = k <= q
        if window_size is not None:
            allowed = allowed & (q - k < window_size)
        real = k[None] >= self.pads[:, None, None]
        if self.keys is None:
            real = real | (k == q)[None]  # a pad query attends to itself only
        return (allowed[None] & real)[:, None]


def shared_sequence_logps(model, head, inputs: mx.array, targets: mx.array, gather: tuple, shared: tuple) -> mx.array:
    """Mean log-prob of the scored tokens of the B chosen then B rejected rows."""
    prefix, pads, counts, r_inputs, r_targets, r_index, r_rows, r_weights, *scored_prefix = shared
    body = model.model
    caches = [PrefixKV(pads, prefix.shape[1]) for _ in body.layers]
    hidden_p = body(prefix, cache=caches)
    chosen = scored_logp_sums(body(inputs, cache=caches), head, targets, *gather)
    rejected = scored_logp_sums(body(r_inputs, cache=caches), head, r_targets, r_index, r_rows, r_weights)
    sums = mx.concatenate([chosen, rejected])
    if scored_prefix:
        in_prefix = scored_logp_sums(hidden_p, head, *scored_prefix)
        sums = sums + mx.concatenate([in_prefix, in_prefix])
    return sums / mx.maximum(counts, 1.0)
