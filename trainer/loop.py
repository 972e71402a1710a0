"""The training loop: prepare a run (model, adapters, data), then train it with the compiled
ORPO step, periodic reports and validation, checkpoints that make a stopped or killed run
resumable exactly, and a stop flag checked between steps.

train() reports everything through a Reporter (trainer/reporter.py): in production that
writes the run folder as it happens, and the app and the user learn about the run only
from there (the layout: trainer/pure/run_folder.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import psutil
from mlx.utils import tree_flatten

from trainer import data as D
from trainer import memory, qat
from trainer.checkpoints import (
    BestTracker,
    keep_best_in_checkpoint,
    restore_best,
    restore_checkpoint,
    save_best,
    save_checkpoint,
    write_summary,
)
from trainer.layouts import BatchLayout, choose_layouts
from trainer.model import ModelError, apply_finetune, load_base, load_tokenizer_for, publish_adapters, resolve_model_path
from trainer.pure import metrics as M
from trainer.pure.config import Config
from trainer.pure.run_folder import ADAPTER_WEIGHTS, RunFolder
from trainer.pure.states import RunState
from trainer.reporter import Reporter
from trainer.run_control import StopFlag
from trainer.samples import generate_samples, sample_prompts
from trainer.step import ShapeBoundedStep, build_schedule, evaluate, make_train_step, step_seed
from trainer.team import Team

# What one step adds up over its micro-batches (and, on a team, over the ranks): the share-
# weighted ORPO metrics, the tokens, and the ranks' stop votes.
STEP_VECTOR = (*M.ORPO_METRICS, "tokens", "stop_votes")


class TrainingError(Exception):
    """Training cannot go on (for instance a NaN loss); one line for the user."""


@dataclass
class Prepared:
    model: nn.Module
    tokenizer: Any
    train_pairs: list[D.Pair]
    valid_pairs: list[D.Pair]
    adapter_cfg: dict
    use_scores: bool
    resolved_path: Path
    valid_prompted: list[int] = field(default_factory=list)  # indices of valid rows with a prompt


def prepare(cfg: Config, log: Callable[[str], None], force: bool = False, team: Team | None = None) -> Prepared:
    """Load data and model; raises ModelError/DataError with one-line messages, and
    DoesNotFit when the run's estimated peak memory exceeds the device's (unless `force`).
    The data is tokenized first, so that check comes before the weights are loaded. On a
    `team` the check is for one rank's share of each batch, times the ranks our launcher
    started on this machine (a rank under mlx.launch counts only itself)."""
    path = resolve_model_path(cfg.model.path)
    splits = D.load_splits(cfg.data, cfg.training.seed)
    for note in splits.notes:
        log(note)
    tokenizer = load_tokenizer_for(path)
    train_pairs, tstats = D.tokenize_rows(splits.train, tokenizer, cfg.data.max_seq_length)
    valid_pairs, vstats = D.tokenize_rows(splits.valid, tokenizer, cfg.data.max_seq_length)
    log(f"data: {splits.source}: {tstats.pairs} train pairs, {vstats.pairs} valid pairs")
    for name, st in (("train", tstats), ("valid", vstats)):
        if st.truncated:
            log(f"data: {st.truncated} of {st.pairs} {name} pairs truncated to data.max_seq_length = {cfg.data.max_seq_length}")
    if len(train_pairs) < cfg.training.batch_size:
        raise D.DataError(f"{splits.source}: {len(train_pairs)} train pairs, fewer than training.batch_size = {cfg.training.batch_size}")
    memory.apply_limits(cfg, log)
    team = team or Team()
    log("memory: " + memory.check_run(cfg, path, train_pairs, valid_pairs, D.pad_id(tokenizer), force,
                                      ranks=team.size, ranks_here=team.here))
    model, tokenizer, path = load_base(path, cfg, tokenizer)  # a quantized base: its cached quantized copy
    # Seeded here, after the base is loaded (building the built-in model reseeds mlx), so the
    # adapter initialisation and dropout depend on training.seed alone.
    mx.random.seed(cfg.training.seed)
    adapter_cfg = apply_finetune(model, cfg)
    if cfg.qat.enable:  # our QAT modules in place of the adapted layers (trainer/qat.py), gates closed
        q = cfg.qat
        if not qat.apply_qat(model, q.bits, q.group_size):
            raise ModelError(f"qat.group_size = {q.group_size}: no layer of this model has an input width divisible by it")
        log(f"qat: fake-quantizing {qat.describe(model)} to {q.bits} bits, group size {q.group_size}, from step {q.start_step}")
    n_train = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    n_total = sum(v.size for _, v in tree_flatten(model.parameters()))
    log(f"model: {path} ({cfg.finetune.type}, {n_train:,} trainable of {n_total:,} parameters)")
    use_scores = any(p.score != 1.0 for p in train_pairs + valid_pairs)
    valid_prompted = [i for i, row in enumerate(splits.valid) if row.prompt is not None]
    return Prepared(model, tokenizer, train_pairs, valid_pairs, adapter_cfg, use_scores, path, valid_prompted)


_SELF = psutil.Process()


def _memory_gb() -> dict[str, float]:
    """Memory at a report: MLX's peak, live arrays and buffer cache, and the process's
    resident set (which also holds what MLX does not count: Python, the tokenizer, data)."""
    return {
        M.PEAK_MEMORY_GB: mx.get_peak_memory() / 1e9,
        M.ACTIVE_MEMORY_GB: mx.get_active_memory() / 1e9,
        M.CACHE_MEMORY_GB: mx.get_cache_memory() / 1e9,
        M.RSS_GB: _SELF.memory_info().rss / 1e9,
    }


class ReportWindow:
    """The steps since the last train report: their summed metrics, tokens and pairs, and
    the training time they took."""

    def __init__(self, micro_batches_per_step: int):
        self.micro_batches_per_step = micro_batches_per_step
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, mx.array] = {}
        self.steps = self.tokens = self.pairs = 0
        self.start = time.perf_counter()

    def add(self, metrics: dict[str, mx.array], tokens: int, pairs: int) -> None:
        """One micro-batch."""
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.tokens += tokens
        self.pairs += pairs

    def means(self) -> dict[str, float]:
        n = self.steps * self.micro_batches_per_step
        return {k: v.item() / n for k, v in self.sums.items()}

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Validation and checkpoint time is not training time: the open window is shifted
        by it (restarting the window would credit its earlier steps to less time)."""
        paused = time.perf_counter()
        yield
        self.start += time.perf_counter() - paused


def train(run_dir: Path, cfg: Config, prep: Prepared, reporter: Reporter, stop: StopFlag, resume_from: Path | None,
          outcome: dict | None = None, team: Team | None = None) -> RunState:
    """Train until `training.iters`, early stopping (`training.patience`), a stop request, or
    an error. Returns the final state (`completed` or `stopped`); raises TrainingError for a
    diverged run. `outcome`, when given, receives what the final status event should add
    (`early_stopped`, `best_step`).

    On a `team` of several ranks (trainer/team.py) every rank runs this with the same
    config; each trains on its share of every global batch, all of them take every decision
    (report, stop, early stop, failure) from the same combined numbers, and only the leader
    writes the run folder."""
    team = team or Team()
    t = cfg.training
    started = time.perf_counter()
    model, pad_id = prep.model, D.pad_id(prep.tokenizer)
    run = RunFolder(run_dir)
    optimizer = optim.AdamW(learning_rate=build_schedule(cfg), weight_decay=t.weight_decay)
    optimizer.init(model.trainable_parameters())

    start_step = 0
    best = BestTracker()
    earlier_wall = 0.0
    if resume_from is not None:
        state = restore_checkpoint(resume_from, model, optimizer)
        start_step = state["step"]
        best = BestTracker.from_state(state)
        earlier_wall = float(state.get("wall_time_s", 0.0))
        if team.leader:
            restore_best(run_dir, resume_from, best, prep.adapter_cfg)
        reporter.on_resume(resume_from, start_step)

    train_batches = D.make_batches(prep.train_pairs, t.batch_size)
    valid_index = D.make_batches(prep.valid_pairs, t.batch_size) if prep.valid_pairs else []
    if t.val_batches >= 0:
        valid_index = valid_index[: t.val_batches]
    # Fast layouts are used only where they give the plain numbers on this model (checked on
    # a real batch); each batch then takes the layout that runs fewer positions.
    # Every rank checks on the whole first global batch, so all of them choose alike.
    first_pairs = [prep.train_pairs[i] for i in train_batches[0]]
    layout = BatchLayout(pad_id, *choose_layouts(model, first_pairs, pad_id, cfg.orpo.beta, prep.use_scores))
    for note in layout.notes(first_pairs):
        reporter.log(note)

    valid_batches = []  # the same at every evaluation: collated once (this rank's shares)
    for idx in valid_index:
        if mine := team.share(idx):
            arrays, extra, _ = layout.device_batch([prep.valid_pairs[i] for i in mine])
            valid_batches.append((len(mine), arrays, *extra))
    valid_pairs_total = sum(map(len, valid_index))
    step_fn = ShapeBoundedStep(lambda: make_train_step(model, optimizer, cfg, prep.use_scores, team.distributed))
    qat_switch = qat.QatSwitch(model, cfg.qat.enable, cfg.qat.start_step)  # gates are data in the compiled step
    qat_switch.at(start_step)
    prompts = sample_prompts(prep, t.sample_prompts)
    model.train()

    def wall_time() -> float:
        return earlier_wall + time.perf_counter() - started

    def checkpoint(step: int) -> None:
        extra = {"micro_batches": step * t.grad_accumulation_steps, "train_batches": len(train_batches), "seed": t.seed,
                 **best.to_state(), "wall_time_s": wall_time()}
        if not team.leader:
            return
        ckpt = save_checkpoint(run_dir, step, model, optimizer, extra, before_rename=lambda tmp: keep_best_in_checkpoint(run_dir, tmp))
        publish_adapters(run.adapters, ckpt / ADAPTER_WEIGHTS, prep.adapter_cfg)
        reporter.on_checkpoint(step, ckpt)

    def validate(step: int) -> None:
        if not valid_pairs_total or t.steps_per_eval == 0:
            return
        tic = time.perf_counter()
        values = evaluate(model, valid_batches, cfg, prep.use_scores, team, valid_pairs_total)
        reporter.on_val(step, {**values, M.VAL_TIME: time.perf_counter() - tic})
        if best.update(step, values[M.LOSS]) and t.keep_best and team.leader:
            reporter.on_new_best(step, save_best(run_dir, model, prep.adapter_cfg), values[M.LOSS])
        if prompts and team.leader:
            for i, (prompt, completion) in enumerate(generate_samples(model, prep.tokenizer, prompts, t.sample_max_tokens)):
                reporter.on_sample(step, i, prompt, completion)

    reporter.on_start(start_step, t.iters, resume_from is not None)
    if start_step == 0:
        validate(0)  # the untrained baseline anchors every validation curve

    window = ReportWindow(t.grad_accumulation_steps)
    step = start_step
    last_saved = start_step if resume_from is not None else -1
    early_stopped = False
    # The ranks stop together: each step's combined numbers carry every rank's stop vote.
    votes = 0.0

    def stopping() -> bool:
        return votes > 0 if team.distributed else stop.requested

    while step < t.iters and not stopping() and not early_stopped:
        # mlx cannot restore a saved RNG state, so dropout draws from a key derived from
        # (seed, step): a resumed run draws exactly what an uninterrupted one would.
        mx.random.seed(step_seed(t.seed, step))
        if qat_switch.at(step):
            reporter.log(f"step {step}: quantization-aware training on")
        grad = None
        combined = mx.zeros((len(STEP_VECTOR),))  # this rank's part of the step's sums
        pairs = 0
        for micro in range(t.grad_accumulation_steps):
            index = step * t.grad_accumulation_steps + micro
            idx = D.batch_at(train_batches, t.seed, index)
            pairs += len(idx)
            arrays, extra, b, mine = layout.team_batch(prep.train_pairs, idx, team)
            share = len(mine) / len(idx)  # 0 with an empty share: its stand-in pair adds nothing
            last = micro == t.grad_accumulation_steps - 1
            if team.distributed:
                weight = mx.array(share * team.size, dtype=mx.float32)
                metrics, grad = step_fn(*arrays, grad, last, *extra, *(None,) * (2 - len(extra)), weight)
            else:
                metrics, grad = step_fn(*arrays, grad, last, *extra)
            combined = combined + mx.stack([*(metrics[k] * share for k in M.ORPO_METRICS),
                                            mx.array(float(b["tokens"]) if mine else 0.0), mx.array(0.0)])
        if team.distributed:  # a stop request on any rank stops them all after this step
            combined = team.total(combined + mx.array([0.0] * (len(STEP_VECTOR) - 1) + [float(stop.requested)]))
        window.add({k: combined[i] for i, k in enumerate(M.ORPO_METRICS)}, combined[-2], pairs)
        mx.eval(window.sums, window.tokens, combined, model.state, optimizer.state)
        votes = combined[-1].item()
        step += 1
        window.steps += 1
        loss_so_far = window.sums[M.LOSS].item()
        if not math.isfinite(loss_so_far):
            reporter.on_nonfinite_loss(step, window.means())
            good = run.latest_checkpoint()
            raise TrainingError(f"loss became {loss_so_far} at step {step} (learning_rate {t.learning_rate}); "
                                f"last good checkpoint: {good.name if good else 'none'}")

        if step % t.steps_per_report == 0 or step == t.iters or stopping():
            elapsed = window.elapsed()
            values = window.means()
            values.update({
                M.LEARNING_RATE: float(optimizer.learning_rate.item()),
                M.TOKENS_PER_SECOND: float(window.tokens) / elapsed,
                M.PAIRS_PER_SECOND: window.pairs / elapsed,
                **_memory_gb(),
            })
            reporter.on_train(step, values)
            window.reset()
        with window.paused():
            if t.steps_per_eval and (step % t.steps_per_eval == 0 or step == t.iters):
                validate(step)
                if best.should_stop(t.patience):
                    early_stopped = True
                    reporter.log(f"step {step}: early stop, no new best val loss in {best.evals_without_improvement} evaluations "
                                 f"(training.patience = {t.patience}); best {best.best_val_loss:.4f} at step {best.best_step}")
            if step % t.save_every == 0:
                checkpoint(step)
                last_saved = step

    if last_saved != step:  # the final step, or where a stop request or early stop ended the loop
        checkpoint(step)
    state = RunState.COMPLETED if step >= t.iters or early_stopped else RunState.STOPPED
    if team.leader:
            write_summary(run_dir, state=state, steps_done=step, total_steps=t.iters, early_stopped=early_stopped,
                      best_val_loss=best.best_val_loss, best_step=best.best_step, wall_time_s=wall_time())
    if outcome is not None and early_stopped:
        outcome.update(early_stopped=True, best_step=best.best_step)
    return state
