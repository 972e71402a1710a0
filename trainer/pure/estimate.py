"""What a config will cost before it runs: memory and work per step, and implied epochs.

Pure (no mlx): the app shows these beside the form, and the trainer's MLX half feeds the
same model with the shapes of the run's real batches (trainer/memory.py). The model's shape
comes from its config.json (the built-in model's recipe, a local folder, or a hub model
already in the local cache); with no shape, only what needs none is estimated.

What is estimated is MLX's peak memory (`mx.get_peak_memory()`, which the trainer reports as
`peak_memory_gb`, never reset, so the peak of the whole run). A training step sets it; the
layout check and validation run forward passes without gradients (`forward_bytes`). The
peak of a step is a sum of terms, each a count the config and the batch fix (bytes per unit,
`memory_counts`) times a coefficient:

- exact, coefficient 1: the stored weights (quantized: bits/8 per weight plus a scale and a
  bias per group in the model's dtype), the float32 adapters with AdamW's two moments (or for
  full fine-tuning the moments of every trained weight), a running gradient sum when
  gradients are accumulated;
- the gradients;
- per position and block the gradient flows back through (the adapted top blocks): hidden-size
  vectors, query/key/value vectors, MLP-width vectors kept for the backward pass, and the
  attention probabilities (per head and attended position; not with Metal's fused attention,
  whose backward pass recomputes them blockwise). A shared prefix, which no projection reads,
  is not run through its last block past the keys and values the answers attend to;
- per position projected onto the vocabulary: the float32 logits, their softmax and its
  gradient; per position of a projected pass, once: the arrays of one block's backward pass
  and the head's;
- DoRA: each adapted layer's output before the magnitude rescaling, per position; on a
  quantized base also each adapted weight dequantized (kept for the backward pass);
- QAT: each fake-quantized weight's correction (its deployed rounding minus itself), kept for
  the backward pass.

The coefficients are fitted once, for every config together, to peaks measured on models of
several shapes (tests/bench/estimate_memory.py --fit; CPU), and checked there against real
runs of another model. The counts scale with the model and the batch as the arrays do.

Work: about 2 FLOPs per weight per token forward and 4 backward (6 with weight gradients of
full fine-tuning; LoRA's frozen weights need only the 2 of the activation gradient).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.pure.builtin_names import TINY_MODEL, TINY_MODEL_CONFIG, TINY_VOCAB_SIZE
from trainer.pure.config import Config

FLOAT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# The linears of one transformer block, by the key LoRA uses for them (finetune.keys).
LINEAR_KEYS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

# Fitted coefficients: how many arrays of each term's unit a training step holds at its
# peak. Fitted by `python tests/bench/estimate_memory.py --fit` (least squares of the
# relative error over a grid of models, batches and fine-tuning types; CPU).
COEFFICIENTS = {
    "gradients": 1.26,  # per trained weight
    "hidden": 5.95,  # hidden-size vectors per position and layer
    "projections": 1.74,  # query + key + value vectors per position and layer
    "mlp": 5.24,  # MLP-width vectors per position and layer
    "attention": 1.03,  # scores per head, attending position and layer (unfused attention only)
    "backward_hidden": 10.92,  # hidden-size vectors per projected pass position, alive once
    "backward_mlp": 3.82,  # MLP-width vectors per projected pass position, alive once
    "logits": 2.74,  # float32 vocabulary rows per projected position
    "dora_outputs": 1.28,  # adapted outputs per position and DoRA layer
    "dequantized": 1.00,  # DoRA on a quantized base: adapted weights dequantized
    "qat": 1.36,  # fake-quantized weights
}
# A forward pass without gradients (the layout check on the first batch, validation):
# everything is transient, so only a layer's arrays and the projection add to the weights
# (fitted the same way; the attention scores fitted at 0 and are left out).
FORWARD_COEFFICIENTS = {
    "hidden": 6.11,  # hidden-size vectors per position
    "mlp": 3.80,  # MLP-width vectors per position
    "logits": 2.08,  # float32 vocabulary rows per projected position
}


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    dtype_bytes: int
    # A base stored quantized (an MLX-quantized model): its bits and group size, else 0.
    quant_bits: int = 0
    quant_group: int = 64

    @property
    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear in one transformer block, by its LoRA key."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        q = self.heads * self.head_dim
        dims = [(h, q), (h, kv), (h, kv), (q, h), (h, self.intermediate), (h, self.intermediate), (self.intermediate, h)]
        return dict(zip(LINEAR_KEYS, dims))

    @property
    def layer_linears(self) -> list[tuple[int, int]]:
        return list(self.linears.values())

    @property
    def layer_params(self) -> int:
        return sum(i * o for i, o in self.layer_linears)

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embed_params * (1 if self.tied else 2)


def shape_from_config(cfg: dict) -> ModelShape:
    heads = int(cfg.get("num_attention_heads", 1))
    hidden = int(cfg["hidden_size"])
    quant = cfg.get("quantization") or cfg.get("quantization_config") or {}
    return ModelShape(
        hidden=hidden,
        layers=int(cfg["num_hidden_layers"]),
        intermediate=int(cfg.get("intermediate_size", 4 * hidden)),
        vocab=int(cfg["vocab_size"]),
        heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads", heads)),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        dtype_bytes=FLOAT_BYTES.get(str(cfg.get("torch_dtype", "float32")), 4),
        quant_bits=int(quant.get("bits", 0) or 0) if isinstance(quant, dict) else 0,
        quant_group=int(quant.get("group_size", 64) or 64) if isinstance(quant, dict) else 64,
    )


def model_shape(model_path: str) -> ModelShape | None:
    """The model's shape without loading it, or None when its config.json is not on disk."""
    if model_path == TINY_MODEL:
        return shape_from_config({**TINY_MODEL_CONFIG, "vocab_size": TINY_VOCAB_SIZE})
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        folder = _hub_cache_folder(model_path)
    try:
        return shape_from_config(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _hub_cache_folder(repo: str) -> Path:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    snapshots = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    return found[-1] if found else Path("/nonexistent")


# ---------------------------------------------------------------------------- batch shapes


@dataclass(frozen=True)
class Pass:
    """One run of a batch's rows through the model: `rows` sequences of `length` positions,
    each attending over `context` positions (its own, plus a shared prefix computed once)."""

    rows: int
    length: int
    context: int
    headed: bool = True  # its last hidden states go on to the vocabulary projection


@dataclass(frozen=True)
class StepShape:
    """What one micro-batch puts through the model: its passes, and how many positions are
    projected onto the vocabulary (all of them in the plain layout, the scored ones when
    only those are gathered)."""

    passes: tuple[Pass, ...]
    projected: int

    @property
    def positions(self) -> int:
        return sum(p.rows * p.length for p in self.passes)

    def layer_positions(self, layers: int) -> int:
        """Positions times the layers each is kept through. A pass whose output reaches no
        projection (a shared prefix) is never run through its last layer past the keys and
        values the continuations read: lazy evaluation skips what nothing uses."""
        return sum(p.rows * p.length * (layers if p.headed else max(layers - 1, 0)) for p in self.passes)

    def layer_attended(self, layers: int) -> int:
        return sum(p.rows * p.length * p.context * (layers if p.headed else max(layers - 1, 0)) for p in self.passes)

    @property
    def headed_positions(self) -> int:
        return sum(p.rows * p.length for p in self.passes if p.headed)

    @property
    def attended(self) -> int:
        """Query-key pairs per head and layer."""
        return sum(p.rows * p.length * p.context for p in self.passes)


def worst_step(cfg: Config) -> StepShape:
    """Every pair at max_seq_length, chosen and rejected as full rows, every position
    projected: no batch of this config can cost more."""
    rows, length = 2 * cfg.training.batch_size, cfg.data.max_seq_length
    return StepShape((Pass(rows, length, length),), rows * length)


# ---------------------------------------------------------------------------- the model


def _adapted_keys(cfg: Config) -> tuple[str, ...]:
    keys = cfg.finetune.keys
    return tuple(k for k in LINEAR_KEYS if not keys or k in keys)


def grad_layers(cfg: Config, shape: ModelShape) -> int:
    """Transformer blocks the gradient flows back through: the adapted (or trained) top ones."""
    n = cfg.finetune.num_layers
    return shape.layers if n < 0 else min(n, shape.layers)


def quantization(cfg: Config, shape: ModelShape) -> tuple[int, int]:
    """(bits, group size) the base is held at during training; bits 0 for a float base."""
    if shape.quant_bits:
        return shape.quant_bits, shape.quant_group
    return cfg.model.quantize.bits, cfg.model.quantize.group_size


def trainable_params(cfg: Config, shape: ModelShape) -> int:
    ft = cfg.finetune
    layers = grad_layers(cfg, shape)
    if ft.type == "full":
        embed = shape.embed_params * (1 if shape.tied else 2) if ft.num_layers < 0 else 0
        return layers * shape.layer_params + embed
    linears = shape.linears
    per_layer = sum(ft.rank * (linears[k][0] + linears[k][1]) for k in _adapted_keys(cfg))
    if ft.type == "dora":
        per_layer += sum(linears[k][1] for k in _adapted_keys(cfg))  # DoRA's magnitude vector
    return layers * per_layer


def _stored_bytes(elements: int, width: int, bits: int, group: int, dtype_bytes: int) -> float:
    """A matrix of `elements` with rows `width` wide: quantized when the rows split into
    whole groups (what mlx-lm's quantize_model requires), else as stored."""
    if bits and width % group == 0:
        return elements * bits / 8 + elements / group * 2 * dtype_bytes
    return elements * dtype_bytes


def weight_bytes(cfg: Config, shape: ModelShape) -> float:
    bits, group = quantization(cfg, shape)
    d = shape.dtype_bytes
    block = sum(_stored_bytes(i * o, i, bits, group, d) for i, o in shape.layer_linears)
    embed = _stored_bytes(shape.embed_params, shape.hidden, bits, group, d) * (1 if shape.tied else 2)
    return shape.layers * block + embed


def _qat_elements(cfg: Config, shape: ModelShape) -> int:
    """Weights trained through fake quantization within the gradient's reach: the adapted
    (or trained) linears of the top blocks and the float embedding / output head, those
    whose input width splits into whole groups."""
    g = cfg.qat.group_size
    linears = shape.linears
    keys = LINEAR_KEYS if cfg.finetune.type == "full" else _adapted_keys(cfg)
    block = sum(i * o for k, (i, o) in linears.items() if k in keys and i % g == 0)
    bits, _ = quantization(cfg, shape)
    if cfg.finetune.type != "full" and not bits:
        # A float base: the frozen linears LoRA left alone are fake-quantized too.
        block = sum(i * o for i, o in shape.layer_linears if i % g == 0)
    embed = 0 if bits or shape.hidden % g else shape.embed_params * (1 if shape.tied else 2)
    return grad_layers(cfg, shape) * block + embed


def _persistent_bytes(cfg: Config, shape: ModelShape) -> float:
    """What lives for the whole run: the weights, the trainable part's AdamW moments (and
    the float32 adapters themselves); these are exact, coefficient 1."""
    trainable = trainable_params(cfg, shape)
    if cfg.finetune.type == "full":
        return weight_bytes(cfg, shape) + trainable * shape.dtype_bytes * 2
    return weight_bytes(cfg, shape) + trainable * 4 * 3  # adapters are created in float32


def memory_counts(cfg: Config, shape: ModelShape, step: StepShape, fused_attention: bool = False) -> dict[str, float]:
    """Each term of a training step's peak in bytes per unit of its coefficient (see
    COEFFICIENTS); "fixed" has coefficient 1. `fused_attention`: MLX's fused attention
    (Metal) recomputes the scores blockwise in its backward pass and keeps none; the CPU's
    attention keeps each layer's probabilities."""
    ft = cfg.finetune
    act = shape.dtype_bytes
    trainable = trainable_params(cfg, shape)
    param_bytes = shape.dtype_bytes if ft.type == "full" else 4
    fixed = _persistent_bytes(cfg, shape)
    if cfg.training.grad_accumulation_steps > 1:
        fixed += trainable * param_bytes  # the running gradient sum
    layers = grad_layers(cfg, shape)
    adapted = _adapted_keys(cfg)
    adapted_out = sum(shape.linears[k][1] for k in adapted)
    adapted_weights = sum(i * o for k, (i, o) in shape.linears.items() if k in adapted)
    bits, _ = quantization(cfg, shape)
    q_dims = (shape.heads + 2 * shape.kv_heads) * shape.head_dim
    kept = step.layer_positions(layers)
    return {
        "fixed": fixed,
        "gradients": trainable * param_bytes,
        "hidden": kept * shape.hidden * act,
        "projections": kept * q_dims * act,
        "mlp": kept * shape.intermediate * act,
        "attention": 0 if fused_attention else step.layer_attended(layers) * shape.heads * act,
        "backward_hidden": step.headed_positions * shape.hidden * act,
        "backward_mlp": step.headed_positions * shape.intermediate * act,
        "logits": step.projected * shape.vocab * 4,
        "dora_outputs": kept * adapted_out * act if ft.type == "dora" else 0,
        "dequantized": layers * adapted_weights * act if ft.type == "dora" and bits else 0,
        "qat": _qat_elements(cfg, shape) * act if cfg.qat.enable else 0,
    }


def forward_counts(cfg: Config, shape: ModelShape, step: StepShape) -> dict[str, float]:
    """The terms of a forward pass without gradients (FORWARD_COEFFICIENTS)."""
    act = shape.dtype_bytes
    # AdamW's moments are still unevaluated (no memory) when the layout check and the first
    # validation run; later validations run beside them, but the train steps cost more then.
    adapters = 0 if cfg.finetune.type == "full" else trainable_params(cfg, shape) * 4
    return {
        "fixed": weight_bytes(cfg, shape) + adapters,
        "hidden": step.positions * shape.hidden * act,
        "mlp": step.positions * shape.intermediate * act,
        "logits": step.projected * shape.vocab * 4,
    }


def _priced(counts: dict[str, float], coefficients: dict[str, float]) -> float:
    return sum(n * coefficients.get(name, 1.0) for name, n in counts.items())


def step_bytes(cfg: Config, shape: ModelShape, step: StepShape, fused_attention: bool = False,
               coefficients: dict[str, float] | None = None) -> float:
    """The peak memory of one training step on a micro-batch of shape `step`."""
    return _priced(memory_counts(cfg, shape, step, fused_attention), coefficients or COEFFICIENTS)


def forward_bytes(cfg: Config, shape: ModelShape, step: StepShape, coefficients: dict[str, float] | None = None) -> float:
    """The peak of a forward pass without gradients over a batch of shape `step` (the
    layout check projects every position of the first batch; validation the scored ones)."""
    return _priced(forward_counts(cfg, shape, step), coefficients or FORWARD_COEFFICIENTS)


@dataclass(frozen=True)
class Estimate:
    weights: float
    trainable: int
    optimizer: float  # trainable weights' AdamW moments, their gradients (and the adapters)
    activations: float  # everything the step's batch adds: activations, logits, DoRA/QAT copies
    flops_per_step: float

    @property
    def total_bytes(self) -> float:
        return self.weights + self.optimizer + self.activations

    @property
    def total_gb(self) -> float:
        return self.total_bytes / 1e9


def estimate(cfg: Config, shape: ModelShape, step: StepShape | None = None, fused_attention: bool = False) -> Estimate:
    """The peak of a training step on a micro-batch of shape `step`; the worst case (every
    pair at max_seq_length, every position projected) unless the real batches' shapes are
    known."""
    step = step or worst_step(cfg)
    counts = memory_counts(cfg, shape, step, fused_attention)
    weights = weight_bytes(cfg, shape)
    total = _priced(counts, COEFFICIENTS)
    optimizer = counts["fixed"] - weights + counts["gradients"] * COEFFICIENTS["gradients"]
    per_token = shape.params * (6 if cfg.finetune.type == "full" else 4)
    return Estimate(
        weights=weights,
        trainable=trainable_params(cfg, shape),
        optimizer=optimizer,
        activations=total - weights - optimizer,
        flops_per_step=per_token * step.positions * cfg.training.grad_accumulation_steps,
    )


def implied_epochs(cfg: Config, train_rows: int | None) -> float | None:
    if not train_rows:
        return None
    return cfg.training.iters * cfg.training.batch_size * cfg.training.grad_accumulation_steps / train_rows
