"""The training loop: a compiled ORPO step, periodic reports and validation, checkpoints
that make a stopped or killed run resumable exactly, and a stop flag checked between steps.

Everything a run does is written to its run directory as it happens (DESIGN.md, contracts):
the app and the user learn about the run only from there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from trainer import data as D
from trainer import qat
from trainer.pure.config import Config
from trainer.pure.events import MetricsWriter, read_events
from trainer.loss import gathered_sequence_logps, orpo_loss, sequence_logps
from trainer.model import (ModelError, apply_finetune, load_base, output_head, publish_adapters, resolve_model_path,
                           trainable_weights)
from trainer.pure.runs import atomic_write_text, write_status
from trainer.run_control import RunLog, StopFlag  # noqa: F401 (re-exported for callers of the loop)
from trainer.shared_prefix import collate_shared, shared_sequence_logps

CHECKPOINTS_KEPT = 2


class TrainingError(Exception):
    """Training cannot go on (for instance a NaN loss); one line for the user."""


# ---------------------------------------------------------------------------- optimizer


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


# ---------------------------------------------------------------------------- checkpoints


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "adapters" / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint. Incomplete ones are still under a temporary name."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.iterdir() if p.name.startswith("step-") and (p / "state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: optim.Optimizer, extra: dict,
                    before_rename: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint into a temporary folder and rename it into place: a SIGKILL at any
    moment leaves either the previous checkpoint or the new one, never a torn one."""
    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:07d}"
    tmp = folder / f".tmp-step-{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    mx.save_safetensors(str(tmp / "adapters.safetensors"), trainable_weights(model))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    state = {"step": step, **extra}
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    if before_rename is not None:
        before_rename(tmp)
    if final.exists():  # re-saving the same step (stop right after a periodic save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in sorted(p for p in folder.iterdir() if p.name.startswith("step-"))[:-CHECKPOINTS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore_checkpoint(ckpt: Path, model: nn.Module, optimizer: optim.Optimizer) -> dict:
    model.load_weights(list(mx.load(str(ckpt / "adapters.safetensors")).items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(ckpt / "optimizer.safetensors")).items()))
    return json.loads((ckpt / "state.json").read_text())


# ---------------------------------------------------------------------------- best and early stop


@dataclass
class BestTracker:
    """The early-stopping bookkeeping: the best validation loss so far, its step, and how many
    evaluations since then brought no new best. NaN is never a best. Saved in each
    checkpoint's state.json, so a resumed run continues the same count."""

    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Record one evaluation; True when `loss` is a new best."""
        if math.isfinite(loss) and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_val_loss, self.best_step, self.evals_without_improvement = loss, step, 0
            return True
        self.evals_without_improvement += 1
        return False

    def should_stop(self, patience: int) -> bool:
        return patience > 0 and self.evals_without_improvement >= patience

    def to_state(self) -> dict:
        return {"best_val_loss": self.best_val_loss, "best_step": self.best_step, "evals_without_improvement": self.evals_without_improvement}

    @classmethod
    def from_state(cls, state: dict) -> "BestTracker":
        loss = state.get("best_val_loss")
        return cls(None if loss is None else float(loss), state.get("best_step"), int(state.get("evals_without_improvement", 0)))


BEST_IN_CHECKPOINT = "best-adapters.safetensors"


def best_dir(run_dir: Path) -> Path:
    return run_dir / "adapters" / "best"


def save_best(run_dir: Path, model: nn.Module, acfg: dict) -> Path:
    """The current adapters as the best ones, in mlx-lm's layout; each file replaced atomically."""
    folder = best_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".adapters.tmp.safetensors"
    mx.save_safetensors(str(tmp), trainable_weights(model))
    os.replace(tmp, folder / "adapters.safetensors")
    atomic_write_text(folder / "adapter_config.json", json.dumps(acfg, indent=2) + "\n")
    return folder


def keep_best_in_checkpoint(run_dir: Path, ckpt_tmp: Path) -> None:
    """Snapshot the best adapters into a checkpoint being written, so a resume from it puts
    back the best of *its* past, not one found in work the crash lost. A copy, not a hard
    link: anything writing into adapters/best in place would change the checkpoint too."""
    src = best_dir(run_dir) / "adapters.safetensors"
    if src.is_file():
        shutil.copyfile(src, ckpt_tmp / BEST_IN_CHECKPOINT)


def restore_best(run_dir: Path, ckpt: Path, tracker: BestTracker, acfg: dict) -> None:
    """On resume: adapters/best as it was at the checkpoint (or gone, when no best was kept then)."""
    saved = ckpt / BEST_IN_CHECKPOINT
    folder = best_dir(run_dir)
    if saved.is_file() and tracker.best_step is not None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".adapters.tmp.safetensors"
        shutil.copyfile(saved, tmp)
        os.replace(tmp, folder / "adapters.safetensors")
        atomic_write_text(folder / "adapter_config.json", json.dumps(acfg, indent=2) + "\n")
    elif folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become "nan"/"inf"/"-inf", as in metrics.jsonl."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_summary(run_dir: Path, **values: Any) -> Path:
    """RUN/summary.json, atomically: what a finished (or stopped) run came to."""
    events = read_events(run_dir / "metrics.jsonl")
    last = {kind: next((e for e in reversed(events) if e.get("event") == kind), None) for kind in ("train", "val")}
    strip = lambda e: None if e is None else {k: v for k, v in e.items() if k not in ("v", "event", "time")}  # noqa: E731
    ckpt = latest_checkpoint(run_dir)
    best = best_dir(run_dir) / "adapters.safetensors"
    summary = {
        **values,
        "final_train": strip(last["train"]),
        "final_val": strip(last["val"]),
        "checkpoints": {
            "latest_adapters": "adapters" if (run_dir / "adapters" / "adapters.safetensors").is_file() else None,
            "best_adapters": "adapters/best" if best.is_file() else None,
            "last_resumable": str(ckpt.relative_to(run_dir)) if ckpt else None,
        },
    }
    path = run_dir / "summary.json"
    atomic_write_text(path, json.dumps(_finite(summary), indent=2, allow_nan=False, default=str) + "\n")
    return path


# ---------------------------------------------------------------------------- samples


def generate_greedy(model: nn.Module, prompt: tuple[int, ...] | list[int], max_tokens: int, eos_ids: set[int]) -> list[int]:
    """Greedy decoding with a KV cache; stops at EOS. The caller sets eval mode."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([list(prompt)]), cache=cache)[:, -1, :]
    out: list[int] = []
    for _ in range(max_tokens):
        token = mx.argmax(logits, axis=-1)
        tid = token.item()
        if tid in eos_ids:
            break
        out.append(tid)
        if len(out) < max_tokens:
            logits = model(token[:, None], cache=cache)[:, -1, :]
    return out


def sample_prompts(prep: "Prepared", n: int) -> list[tuple[int, ...]]:
    """The prompt tokens of the first `n` validation rows that have a prompt (flat rows have
    nothing to complete), exactly as training tokenized them; fixed for the whole run."""
    if n <= 0:
        return []
    prompts = (prep.valid_pairs[i].prompt for i in prep.valid_prompted if i < len(prep.valid_pairs))
    return [p for p in prompts if p][:n]  # an empty prompt (a blank prompt column) gives no context


def generate_samples(model: nn.Module, tokenizer: Any, prompts: list[tuple[int, ...]], max_tokens: int) -> list[tuple[str, str]]:
    """(prompt text, completion text) per prompt; the model is left in train mode."""
    eos = set(getattr(tokenizer, "eos_token_ids", None) or ()) | {tokenizer.eos_token_id}
    eos.discard(None)
    model.eval()
    try:
        out = []
        for prompt in prompts:
            tokens = generate_greedy(model, prompt, max_tokens, eos)
            out.append((tokenizer.decode(list(prompt), skip_special_tokens=True).strip(), tokenizer.decode(tokens, skip_special_tokens=True)))
        return out
    finally:
        model.train()


def truncate_metrics_after(path: Path, step: int) -> int:
    """Drop events past `step` (work lost in a crash that the resumed run redoes), so the
    file keeps one continuous step sequence. Truncating in place lets tailing readers notice
    (their offset passes the end) and re-read. Returns how many lines were dropped."""
    if not path.exists():
        return 0
    keep_bytes, dropped = 0, 0
    with path.open("rb") as fh:
        for raw in fh:
            try:
                past = json.loads(raw).get("step", 0) > step
            except (ValueError, AttributeError):
                past = not raw.endswith(b"\n")  # a torn last line goes; other junk stays
            if past:
                dropped += 1
            elif dropped == 0:
                keep_bytes += len(raw)
    if dropped:
        os.truncate(path, keep_bytes)
    return dropped


# ---------------------------------------------------------------------------- the step


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


def make_train_step(model: nn.Module, optimizer: optim.Optimizer, cfg: Config, use_scores: bool):
    """One micro-batch forward/backward, compiled with the model, optimizer and RNG state as
    implicit inputs and outputs (mlx-lm's pattern), so `mx.eval` once per step is the only
    host synchronisation."""
    value_and_grad = nn.value_and_grad(model, make_loss_fn(cfg.orpo.beta, use_scores))
    accum = cfg.training.grad_accumulation_steps
    max_norm = cfg.training.max_grad_norm
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs, targets, mask, scores, prev_grad, do_update, gather=None, shared=None):
        (_, metrics), grad = value_and_grad(model, inputs, targets, mask, scores, gather, shared)
        if prev_grad is not None:
            grad = tree_map(lambda a, b: a + b, grad, prev_grad)
        if do_update:
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


class ShapeBoundedStep:
    """The compiled step, rebuilt after MAX_COMPILED_SHAPES distinct input shapes.

    mx.compile keeps one compiled graph per input shape for as long as the function lives,
    about 5 MB of host memory each for the 4-layer tiny model (more for deeper ones); a
    dataset whose batches have hundreds of distinct widths would grow the trainer by
    gigabytes. A fresh function lets
    the old graphs go (their memory is reused), at the cost of tracing shapes again."""

    MAX_COMPILED_SHAPES = 32

    def __init__(self, build: Callable[[], Callable]):
        self.build = build
        self.fn = build()
        self.seen: set = set()
        self.rebuilds = 0

    def __call__(self, *args):
        key = tuple(map(_signature, args))
        if key not in self.seen:
            if len(self.seen) >= self.MAX_COMPILED_SHAPES:
                self.fn, self.seen = self.build(), set()
                self.rebuilds += 1
            self.seen.add(key)
        return self.fn(*args)


def to_device(batch: dict) -> tuple[mx.array, ...]:
    return tuple(mx.array(batch[k]) for k in ("inputs", "targets", "mask", "scores"))


def gather_to_device(batch: dict) -> tuple[mx.array, ...]:
    return tuple(mx.array(a) for a in batch["gather"])


def shared_to_device(batch: dict) -> tuple[mx.array, ...]:
    return tuple(mx.array(a) for a in batch["shared"])


def _layout_metrics(model: nn.Module, use_scores: bool, arrays: tuple, fast: bool = True) -> dict | None:
    """Loss and metrics of one batch in eval mode. A fast layout that this model cannot
    drive (it raises) gives None; the plain reference is allowed to raise."""
    loss_fn = make_loss_fn(0.1, use_scores)
    model.eval()
    try:
        loss, metrics = loss_fn(model, *arrays)
        return {"loss": loss, **metrics}
    except Exception:  # noqa: BLE001 - such a model keeps the plain layout; a real fault shows there
        if not fast:
            raise
        return None
    finally:
        model.train()


def _same(reference: dict, got: dict | None) -> bool:
    return got is not None and all(bool(mx.allclose(reference[k], got[k], atol=1e-4, rtol=1e-4).item()) for k in reference)


def choose_layouts(model: nn.Module, pairs: list, pad_id: int, use_scores: bool) -> tuple[bool, bool]:
    """(gathered head, shared prefix): each used only where its loss and every metric equal
    the plain full-logits ones on this real batch of the run's own model.

    The gathered head holds for mlx-lm's usual layout, not for a model that post-processes
    its logits (softcapping, scaling). The shared prefix needs attention that takes mlx-lm's
    cache and mask hooks and relative (rotary) positions; absolute position embeddings or
    attention code of the model's own give other numbers."""
    if output_head(model) is None:
        return False, False
    plain = D.collate(pairs, pad_id)
    reference = _layout_metrics(model, use_scores, to_device(plain), fast=False)
    gathered = _same(reference, _layout_metrics(model, use_scores, (*to_device(plain), gather_to_device(plain))))
    shared = collate_shared(pairs, pad_id) if gathered else None
    sharing = shared is not None and _same(reference, _layout_metrics(
        model, use_scores, (*to_device(shared), gather_to_device(shared), shared_to_device(shared))))
    return gathered, sharing


def use_gathered_head(model: nn.Module, batch: dict, use_scores: bool) -> bool:
    """Whether projecting only the scored positions gives this model's own numbers on `batch`."""
    if output_head(model) is None:
        return False
    reference = _layout_metrics(model, use_scores, to_device(batch), fast=False)
    return _same(reference, _layout_metrics(model, use_scores, (*to_device(batch), gather_to_device(batch))))


def use_shared_prefix(model: nn.Module, pairs: list, pad_id: int, use_scores: bool) -> bool:
    """Whether running each pair's shared prefix once gives this model's own numbers."""
    return choose_layouts(model, pairs, pad_id, use_scores)[1]


def positions(batch: dict) -> int:
    """Token positions a batch runs through the model: what its layout costs."""
    return batch.get("positions", batch["inputs"].size)


def evaluate(model: nn.Module, batches: list[tuple[int, tuple[mx.array, ...]]], cfg: Config, use_scores: bool) -> dict[str, float]:
    """Pair-weighted means of the ORPO metrics over `(pairs, device arrays)` batches that
    were collated once for the whole run."""
    loss_fn = make_loss_fn(cfg.orpo.beta, use_scores)
    model.eval()
    totals: dict[str, mx.array] = {}
    count = 0
    for n_pairs, arrays, *extra in batches:
        _, metrics = loss_fn(model, *arrays, *extra)
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + v * n_pairs
        count += n_pairs
        mx.eval(totals)
    model.train()
    return {k: v.item() / count for k, v in totals.items()}


# ---------------------------------------------------------------------------- the run


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


def prepare(cfg: Config, log: RunLog) -> Prepared:
    """Load model and data; raises ModelError/DataError with one-line messages."""
    path = resolve_model_path(cfg.model.path)
    splits = D.load_splits(cfg.data, cfg.training.seed)
    for note in splits.notes:
        log(note)
    model, tokenizer, path = load_base(path, cfg)  # a quantized base: its cached quantized copy
    train_pairs, tstats = D.tokenize_rows(splits.train, tokenizer, cfg.data.max_seq_length)
    valid_pairs, vstats = D.tokenize_rows(splits.valid, tokenizer, cfg.data.max_seq_length)
    log(f"data: {splits.source}: {tstats.pairs} train pairs, {vstats.pairs} valid pairs")
    for name, st in (("train", tstats), ("valid", vstats)):
        if st.truncated:
            log(f"data: {st.truncated} of {st.pairs} {name} pairs truncated to data.max_seq_length = {cfg.data.max_seq_length}")
    if len(train_pairs) < cfg.training.batch_size:
        raise D.DataError(f"{splits.source}: {len(train_pairs)} train pairs, fewer than training.batch_size = {cfg.training.batch_size}")
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


def _peak_memory_gb() -> float:
    return mx.get_peak_memory() / 1e9


def train(run_dir: Path, cfg: Config, prep: Prepared, log: RunLog, stop: StopFlag, resume_from: Path | None,
          outcome: dict | None = None) -> str:
    """Train until `training.iters`, early stopping (`training.patience`), a stop request, or
    an error. Returns the final state (`completed` or `stopped`); raises TrainingError for a
    diverged run. `outcome`, when given, receives what the final status event should add
    (`early_stopped`, `best_step`)."""
    t = cfg.training
    started = time.perf_counter()
    model, pad_id = prep.model, prep.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = prep.tokenizer.eos_token_id
    metrics_path = run_dir / "metrics.jsonl"
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
        restore_best(run_dir, resume_from, best, prep.adapter_cfg)
        dropped = truncate_metrics_after(metrics_path, start_step)
        log(f"resumed from {resume_from.name} (step {start_step})" + (f"; {dropped} metric lines past it dropped and redone" if dropped else ""))
    writer = MetricsWriter(metrics_path)

    train_batches = D.make_batches(prep.train_pairs, t.batch_size)
    valid_index = D.make_batches(prep.valid_pairs, t.batch_size) if prep.valid_pairs else []
    if t.val_batches >= 0:
        valid_index = valid_index[: t.val_batches]
    # Fast layouts are used only where they give the plain numbers on this model (checked on
    # a real batch); each batch then takes the layout that runs fewer positions.
    first_pairs = [prep.train_pairs[i] for i in train_batches[0]]
    first = D.collate(first_pairs, pad_id)
    gathered, sharing = choose_layouts(model, first_pairs, pad_id, prep.use_scores)
    share = first["gather"][2].sum() / first["mask"].size
    log("scoring: only completion positions are projected onto the vocabulary "
        f"({share:.0%} of the first batch's positions)" if gathered else
        "scoring: this model's logits need the full projection (its head is not the usual layout)")
    if sharing:
        log("shared prefix: each pair's prompt runs through the model once for both answers")
    elif gathered and collate_shared(first_pairs, pad_id) is not None:
        log("shared prefix: not used (this model's attention does not give the same numbers with it)")

    def device_batch(pairs: list) -> tuple:
        b = D.collate(pairs, pad_id)
        s = collate_shared(pairs, pad_id) if sharing else None
        if s is not None and positions(s) < positions(b):
            return to_device(s), (gather_to_device(s), shared_to_device(s)), s
        return to_device(b), ((gather_to_device(b),) if gathered else ()), b

    valid_batches = []  # the same at every evaluation: collated once
    for idx in valid_index:
        arrays, extra, _ = device_batch([prep.valid_pairs[i] for i in idx])
        valid_batches.append((len(idx), arrays, *extra))
    step_fn = ShapeBoundedStep(lambda: make_train_step(model, optimizer, cfg, prep.use_scores))
    qat_switch = qat.QatSwitch(model, cfg.qat.enable, cfg.qat.start_step)  # gates are data in the compiled step
    qat_switch.at(start_step)
    prompts = sample_prompts(prep, t.sample_prompts)
    model.train()

    def wall_time() -> float:
        return earlier_wall + time.perf_counter() - started

    def checkpoint(step: int) -> None:
        extra = {"micro_batches": step * t.grad_accumulation_steps, "train_batches": len(train_batches), "seed": t.seed,
                 **best.to_state(), "wall_time_s": wall_time()}
        ckpt = save_checkpoint(run_dir, step, model, optimizer, extra, before_rename=lambda tmp: keep_best_in_checkpoint(run_dir, tmp))
        publish_adapters(run_dir / "adapters", ckpt / "adapters.safetensors", prep.adapter_cfg)
        writer.write("checkpoint", step, path=str(ckpt.relative_to(run_dir)))
        log(f"step {step}: checkpoint saved ({ckpt.name})")

    def validate(step: int) -> None:
        if not valid_batches or t.steps_per_eval == 0:
            return
        tic = time.perf_counter()
        values = evaluate(model, valid_batches, cfg, prep.use_scores)
        writer.write("val", step, **values, val_time=time.perf_counter() - tic)
        log(f"step {step}: val loss {values['loss']:.4f}, reward acc {values['rewards/accuracies']:.3f}, margin {values['rewards/margins']:.4f}")
        if best.update(step, values["loss"]) and t.keep_best:
            folder = save_best(run_dir, model, prep.adapter_cfg)
            writer.write("checkpoint", step, path=str(folder.relative_to(run_dir)), best=True, val_loss=values["loss"])
            log(f"step {step}: new best val loss, adapters saved to {folder.relative_to(run_dir)}")
        if prompts:
            for i, (prompt, completion) in enumerate(generate_samples(model, prep.tokenizer, prompts, t.sample_max_tokens)):
                writer.write("sample", step, prompt=prompt, completion=completion, index=i)

    write_status(run_dir, state="running", pid=os.getpid(), step=start_step, total_steps=t.iters, error=None, ended_at=None)
    writer.write("status", start_step, state="running", resumed=resume_from is not None)
    if start_step == 0:
        validate(0)  # the untrained baseline anchors every validation curve

    window: dict[str, mx.array] = {}
    window_steps = window_tokens = window_pairs = 0
    window_start = time.perf_counter()
    step = start_step
    last_saved = start_step if resume_from is not None else -1
    early_stopped = False
    while step < t.iters and not stop.requested and not early_stopped:
        # mlx cannot restore a saved RNG state, so dropout draws from a key derived from
        # (seed, step): a resumed run draws exactly what an uninterrupted one would.
        mx.random.seed(step_seed(t.seed, step))
        if qat_switch.at(step):
            log(f"step {step}: quantization-aware training on")
        grad = None
        for micro in range(t.grad_accumulation_steps):
            index = step * t.grad_accumulation_steps + micro
            idx = D.batch_at(train_batches, t.seed, index)
            arrays, extra, b = device_batch([prep.train_pairs[i] for i in idx])
            metrics, grad = step_fn(*arrays, grad, micro == t.grad_accumulation_steps - 1, *extra)
            for k, v in metrics.items():
                window[k] = window.get(k, 0.0) + v
            window_tokens += b["tokens"]
            window_pairs += len(idx)
        mx.eval(window, model.state, optimizer.state)
        step += 1
        window_steps += 1
        loss_so_far = window["loss"].item()
        if not math.isfinite(loss_so_far):
            n = window_steps * t.grad_accumulation_steps
            writer.write("train", step, **{k: v.item() / n for k, v in window.items()})
            good = latest_checkpoint(run_dir)
            raise TrainingError(f"loss became {loss_so_far} at step {step} (learning_rate {t.learning_rate}); last good checkpoint: {good.name if good else 'none'}")

        if step % t.steps_per_report == 0 or step == t.iters or stop.requested:
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            n = window_steps * t.grad_accumulation_steps
            values = {k: v.item() / n for k, v in window.items()}
            values.update(
                learning_rate=float(optimizer.learning_rate.item()),
                tokens_per_second=window_tokens / elapsed,
                pairs_per_second=window_pairs / elapsed,
                peak_memory_gb=_peak_memory_gb(),
            )
            writer.write("train", step, **values)
            write_status(run_dir, step=step)
            log(f"step {step}/{t.iters}: loss {values['loss']:.4f}, nll {values['nll_loss']:.4f}, log-odds {values['log_odds_chosen']:.3f}, reward acc {values['rewards/accuracies']:.3f}, {values['pairs_per_second']:.1f} pairs/s")
            window, window_steps, window_tokens, window_pairs = {}, 0, 0, 0
            window_start = time.perf_counter()
        # Validation and checkpoint time is not training time: the open throughput window
        # is shifted by it (restarting the window would credit its earlier steps to less time).
        paused = time.perf_counter()
        if t.steps_per_eval and (step % t.steps_per_eval == 0 or step == t.iters):
            validate(step)
            if best.should_stop(t.patience):
                early_stopped = True
                log(f"step {step}: early stop, no new best val loss in {best.evals_without_improvement} evaluations "
                    f"(training.patience = {t.patience}); best {best.best_val_loss:.4f} at step {best.best_step}")
        if step % t.save_every == 0:
            checkpoint(step)
            last_saved = step
        window_start += time.perf_counter() - paused

    if last_saved != step:  # the final step, or where a stop request or early stop ended the loop
        checkpoint(step)
    state = "completed" if step >= t.iters or early_stopped else "stopped"
    write_summary(run_dir, state=state, steps_done=step, total_steps=t.iters, early_stopped=early_stopped,
                  best_val_loss=best.best_val_loss, best_step=best.best_step, wall_time_s=wall_time())
    if outcome is not None and early_stopped:
        outcome.update(early_stopped=True, best_step=best.best_step)
    return state
