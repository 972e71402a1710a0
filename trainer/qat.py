"""Quantization-aware training: fake-quantize the weights the model will be deployed with, using
a straight-through estimator, so training learns to survive `orpo-train fuse --quantize`.

How it works:

* After `apply_finetune`, :func:`apply_qat` replaces modules with our own subclasses (never
  patching mlx's classes): a LoRA/DoRA layer becomes :class:`QATLoRALinear` /
  :class:`QATDoRALinear`, a plain float `nn.Linear` :class:`QATLinear` and a float
  `nn.Embedding` :class:`QATEmbedding`. Each new module holds exactly the arrays and children
  of the one it replaces, so every parameter path (`...q_proj.lora_a`, `...linear.weight`) is
  unchanged: adapters save and load in plain mlx_lm as before, and `fuse()` is inherited.
* The fake-quantized weight is the *deployed* one: for LoRA `W + scale·(Bᵀ Aᵀ)` and for DoRA
  `m/‖W + scale·Bᵀ Aᵀ‖ · (W + scale·Bᵀ Aᵀ)`, exactly what `fuse()` writes (a quantized base is
  dequantized first). It is rounded per group with `mx.quantize`/`mx.dequantize` at
  (`qat.bits`, `qat.group_size`), the same affine scheme mlx_lm's `quantize_model` uses.
* Straight-through estimator: `W_used = W + gate·stop_gradient(fq(W) − W)`. Its value is
  `fq(W)` when the gate is 1, its gradient with respect to `W` is the identity. For LoRA/DoRA
  the layer keeps its own forward and adds `x @ stop_gradient(gate·(fq(W_eff) − W_eff))ᵀ`: the
  same value as `x @ fq(W_eff)ᵀ` (+ bias), the same gradients for A, B (and m) as the STE
  through `W_eff`, and exactly the plain layer (dropout included) while the gate is 0.
* The gate is DATA: a scalar `mx.array` stored on each module as `_qat_gate`. mlx does not
  count names starting with `_` as parameters (not trained, not saved), but they are in
  `model.state`, which the compiled step takes as an input: setting the gate between steps
  switches QAT on inside the already compiled graph, with no retrace and no stale trace.
* Layers whose input width is not a multiple of `qat.group_size` are left alone: the
  deployment quantizer (`quantize_model`) skips them too. Layers of a base that is already
  quantized and carry no adapter are left alone as well.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear

GATE = "_qat_gate"


def fake_quantize(w: mx.array, bits: int, group_size: int) -> mx.array:
    """`w` rounded to the affine (bits, group_size) grid mlx_lm deploys, back in w's dtype."""
    q, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
    return mx.dequantize(q, scales, biases, group_size=group_size, bits=bits).astype(w.dtype)


def qat_weight(w: mx.array, gate: mx.array, bits: int, group_size: int) -> mx.array:
    """The straight-through fake-quantized weight: value `fq(w)` when gate = 1 (`w` when 0),
    gradient with respect to `w` the identity."""
    return w + mx.stop_gradient(gate.astype(w.dtype) * (fake_quantize(w, bits, group_size) - w))


class _QAT:
    """Mixin: the fake-quantization settings and gate of one layer."""

    _qat_bits: int
    _qat_group_size: int

    def _qat_correction(self, w: mx.array) -> mx.array:
        """`stop_gradient(gate·(fq(w) − w))`: what turns `w` into its deployed rounding."""
        gate = getattr(self, GATE).astype(w.dtype)
        return mx.stop_gradient(gate * (fake_quantize(w, self._qat_bits, self._qat_group_size) - w))


class QATLinear(_QAT, nn.Linear):
    """A float Linear (full fine-tuning, or a frozen layer LoRA does not adapt) whose weight
    goes through the STE fake quantizer."""

    def __call__(self, x: mx.array) -> mx.array:
        w = self["weight"]
        w = w + self._qat_correction(w)
        if "bias" in self:
            return mx.addmm(self["bias"], x, w.T)
        return x @ w.T


class QATEmbedding(_QAT, nn.Embedding):
    """A float Embedding (also the tied output head) with a fake-quantized table."""

    def _table(self) -> mx.array:
        w = self["weight"]
        return w + self._qat_correction(w)

    def __call__(self, x: mx.array) -> mx.array:
        return self._table()[x]

    def as_linear(self, x: mx.array) -> mx.array:
        return x @ self._table().T


class QATLoRALinear(_QAT, LoRALinear):
    def deployed_weight(self) -> mx.array:
        """The weight `fuse()` writes: base (dequantized if quantized) + scale·Bᵀ Aᵀ."""
        linear = self.linear
        w = linear.weight
        if isinstance(linear, nn.QuantizedLinear):
            w = mx.dequantize(w, linear.scales, linear.biases, group_size=linear.group_size,
                              bits=linear.bits, mode=linear.mode)
        return w + ((self.scale * self.lora_b.T) @ self.lora_a.T).astype(w.dtype)

    def __call__(self, x: mx.array) -> mx.array:
        y = super().__call__(x)
        return y + x @ self._qat_correction(self.deployed_weight()).astype(x.dtype).T


class QATDoRALinear(_QAT, DoRALinear):
    def deployed_weight(self) -> mx.array:
        """The weight `fuse()` writes: m/‖W + scale·Bᵀ Aᵀ‖ · (W + scale·Bᵀ Aᵀ), row-wise."""
        w = self._dequantized_weight()
        adapted = w + ((self.scale * self.lora_b.T) @ self.lora_a.T).astype(w.dtype)
        return (self.m / mx.linalg.norm(adapted, axis=1))[:, None] * adapted

    def __call__(self, x: mx.array) -> mx.array:
        y = super().__call__(x)
        return y + x @ self._qat_correction(self.deployed_weight()).astype(x.dtype).T


_WRAP = {LoRALinear: QATLoRALinear, DoRALinear: QATDoRALinear, nn.Linear: QATLinear, nn.Embedding: QATEmbedding}


def _input_dims(module: nn.Module) -> int:
    if isinstance(module, (LoRALinear, DoRALinear)):
        return module.lora_a.shape[0]
    return module.weight.shape[-1]


def _clone_as(cls: type, module: nn.Module, bits: int, group_size: int) -> nn.Module:
    """A `cls` holding the very same arrays, children and attributes as `module` (so the
    parameter paths and frozen state are unchanged), plus the QAT settings and a closed gate."""
    new = cls.__new__(cls)
    dict.update(new, module)
    new.__dict__.update(module.__dict__)
    new.__dict__["_no_grad"] = set(module._no_grad)
    new.__dict__["_qat_bits"] = bits
    new.__dict__["_qat_group_size"] = group_size
    setattr(new, GATE, mx.array(0.0))
    return new


def apply_qat(model: nn.Module, bits: int, group_size: int) -> int:
    """Swap in the QAT modules (gate closed); returns how many layers now fake-quantize."""
    swaps: list[tuple[str, nn.Module]] = []
    inside_adapter: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside_adapter):
            continue  # the base Linear of a LoRA/DoRA layer: the wrapper fake-quantizes the sum
        cls = _WRAP.get(type(module))
        if cls is None:
            continue
        if cls in (QATLoRALinear, QATDoRALinear):
            inside_adapter.append(name)
        if _input_dims(module) % group_size:
            continue  # never quantized at deployment either
        swaps.append((name, _clone_as(cls, module, bits, group_size)))
    if swaps:
        from mlx.utils import tree_unflatten

        model.update_modules(tree_unflatten(swaps))
    return len(swaps)


def qat_modules(model: nn.Module) -> list[nn.Module]:
    return [m for _, m in model.named_modules() if isinstance(m, _QAT)]


def set_gate(model: nn.Module, on: bool) -> None:
    value = mx.array(1.0 if on else 0.0)
    for module in qat_modules(model):
        setattr(module, GATE, value)


class QatSwitch:
    """Opens the gates from `qat.start_step` on; `at(step)` before each step (and on resume)
    returns True when it changed the gates."""

    def __init__(self, model: nn.Module, enabled: bool, start_step: int):
        self.model, self.enabled, self.start_step = model, enabled, start_step
        self.on: bool | None = None

    def at(self, step: int) -> bool:
        if not self.enabled:
            return False
        on = step >= self.start_step
        if on == self.on:
            return False
        set_gate(self.model, on)
        self.on = on
        return True


def describe(model: nn.Module) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for m in qat_modules(model):
        kinds[type(m).__name__] = kinds.get(type(m).__name__, 0) + 1
    return kinds
