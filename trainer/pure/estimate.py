"""What a config will cost before it runs: memory and work per step, and implied epochs.

Pure (no mlx): the app shows these beside the form. The model's shape comes from its
config.json (the built-in model's recipe, a local folder, or a hub model already in the
local cache); with no shape, only what needs none is estimated.

Memory model (bytes), for the peak of one training step:
- weights at their stored or quantized width (quantized: bits/8 per weight plus a 16-bit
  scale and bias per group);
- trainable parameters in float32, their gradients, and AdamW's two moments;
- activations kept for the backward pass: per layer and token, about ACTIVATION_FACTOR
  hidden-size vectors (attention and MLP inputs, normalised copies, the MLP's wide
  intermediate counted by its width), for chosen and rejected sequences of the batch;
- the logits of the batch, their log-softmax, its gradient and a float32 cast (the vocabulary projection
  dominates small models).
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

ACTIVATION_FACTOR = 24  # hidden-size vectors kept per token and layer, fitted on the tiny model (see tests/bench/estimate_memory.py)
FLOAT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Logits, their log-softmax, its gradient and the float32 cast all live at the peak.
LOGIT_COPIES = 4


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

    @property
    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear in one transformer block: q, k, v, o, gate, up, down."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        q = self.heads * self.head_dim
        return [(h, q), (h, kv), (h, kv), (q, h), (h, self.intermediate), (h, self.intermediate), (self.intermediate, h)]

    @property
    def layer_params(self) -> int:
        return sum(i * o for i, o in self.layer_linears)

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden
        return self.layers * self.layer_params + embed * (1 if self.tied else 2)


def shape_from_config(cfg: dict) -> ModelShape:
    heads = int(cfg.get("num_attention_heads", 1))
    hidden = int(cfg["hidden_size"])
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


@dataclass(frozen=True)
class Estimate:
    weights: float
    trainable: int
    optimizer: float  # trainable weights + gradients + AdamW moments
    activations: float
    logits: float
    flops_per_step: float

    @property
    def total_bytes(self) -> float:
        return self.weights + self.optimizer + self.activations + self.logits

    @property
    def total_gb(self) -> float:
        return self.total_bytes / 1e9


def trainable_params(cfg: Config, shape: ModelShape) -> int:
    ft = cfg.finetune
    layers = shape.layers if ft.num_layers < 0 else min(ft.num_layers, shape.layers)
    if ft.type == "full":
        return layers * shape.layer_params
    per_layer = sum(ft.rank * (i + o) for i, o in shape.layer_linears)
    if ft.type == "dora":
        per_layer += sum(o for _, o in shape.layer_linears)  # DoRA's magnitude vector
    return layers * per_layer


def estimate(cfg: Config, shape: ModelShape, seq_len: int | None = None) -> Estimate:
    """`seq_len`: the padded length of a batch's sequences; max_seq_length (the worst case)
    unless the data's real lengths are known (the data check reports the longest pair)."""
    bits = cfg.model.quantize.bits
    if bits:
        weight_bytes = shape.layers * shape.layer_params * (bits / 8 + 4 / cfg.model.quantize.group_size)
        weight_bytes += shape.vocab * shape.hidden * shape.dtype_bytes * (1 if shape.tied else 2)
    else:
        weight_bytes = shape.params * shape.dtype_bytes
    trainable = trainable_params(cfg, shape)
    t = cfg.training
    tokens = t.batch_size * 2 * min(seq_len or cfg.data.max_seq_length, cfg.data.max_seq_length)
    activations = tokens * shape.layers * ACTIVATION_FACTOR * shape.hidden * 4
    activations += tokens * shape.layers * shape.intermediate * 4  # the MLP's wide inner state
    logits = tokens * shape.vocab * 4 * LOGIT_COPIES
    per_token = shape.params * (6 if cfg.finetune.type == "full" else 4)
    return Estimate(
        weights=weight_bytes,
        trainable=trainable,
        optimizer=trainable * 4 * 4,
        activations=activations,
        logits=logits,
        flops_per_step=per_token * tokens * t.grad_accumulation_steps,
    )


def implied_epochs(cfg: Config, train_rows: int | None) -> float | None:
    if not train_rows:
        return None
    return cfg.training.iters * cfg.training.batch_size * cfg.training.grad_accumulation_steps / train_rows
