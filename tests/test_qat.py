"""Quantization-aware training (trainer/qat.py): the straight-through estimator, the deployed
(fused) weight it rounds, the gate as data in the compiled step, and a real `orpo-train` run
whose adapters load in plain mlx_lm and whose fake-quantized forward is the deployed model's."""

import json
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
import tomllib
from mlx.utils import tree_flatten
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear
from trainer_helpers import DEMO, run_trainer

from trainer import qat
from trainer.model import apply_finetune, load_base, resolve_model_path
from trainer.pure.config import apply_overrides, load_preset
from trainer.pure.events import read_events
from trainer.step import make_loss_fn, make_train_step


def test_ste_value_is_the_rounding_and_gradient_is_the_identity():
    w = mx.random.normal((32, 128), key=mx.random.key(1))
    fq = qat.fake_quantize(w, 3, 64)
    assert mx.abs(fq - w).max().item() > 1e-3  # 3 bits really rounds
    for gate in (0.0, 1.0):
        g = mx.array(gate)
        used = qat.qat_weight(w, g, 3, 64)
        assert mx.allclose(used, fq if gate else w, atol=1e-6).item()
        grad = mx.grad(lambda v, g=g: qat.qat_weight(v, g, 3, 64).sum())(w)
        assert mx.array_equal(grad, mx.ones_like(w)).item()
    # Without the estimator the gradient through quantize/dequantize is not the identity.
    raw = mx.grad(lambda v: qat.fake_quantize(v, 3, 64).sum())(w)
    assert not mx.array_equal(raw, mx.ones_like(w)).item()


class Holder(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer


def _adapter(kind: str, quantized_base: bool, bias: bool):
    mx.random.seed(3)
    base = nn.Linear(128, 64, bias=bias)
    if quantized_base:
        base = nn.QuantizedLinear.from_linear(base, 64, 4)
    cls = LoRALinear if kind == "lora" else DoRALinear
    layer = cls.from_base(base, r=4, scale=10.0)
    layer.lora_b = mx.random.normal(layer.lora_b.shape) * 0.1  # a trained-looking update
    return layer


@pytest.mark.parametrize("kind", ["lora", "dora"])
@pytest.mark.parametrize("quantized_base", [False, True], ids=["float", "q4base"])
def test_fake_quantized_weight_is_the_fused_weight(kind, quantized_base):
    layer = _adapter(kind, quantized_base, bias=not quantized_base)
    fused = layer.fuse(dequantize=True)
    holder = Holder(layer)
    x = mx.random.normal((2, 5, 128), key=mx.random.key(2))
    plain = holder.layer(x)
    names = sorted(k for k, _ in tree_flatten(holder.parameters()))
    assert qat.apply_qat(holder, 3, 64) == 1
    wrapped = holder.layer
    assert isinstance(wrapped, qat.QATLoRALinear if kind == "lora" else qat.QATDoRALinear)
    assert sorted(k for k, _ in tree_flatten(holder.parameters())) == names  # same parameter paths
    assert mx.allclose(wrapped.deployed_weight(), fused.weight, atol=1e-5).item()
    # Gate closed: exactly the plain adapter. Open: the fused weight rounded to 3 bits.
    assert mx.allclose(wrapped(x), plain, atol=1e-5).item()
    qat.set_gate(holder, True)
    expected = x @ qat.fake_quantize(fused.weight, 3, 64).T
    if "bias" in fused:
        expected = expected + fused.bias
    assert mx.allclose(wrapped(x), expected, atol=1e-4).item()
    assert not mx.allclose(wrapped(x), plain, atol=1e-3).item()


def test_layers_the_deployment_would_not_quantize_are_left_alone():
    holder = Holder(nn.Linear(96, 8))  # 96 is no multiple of 64
    assert qat.apply_qat(holder, 4, 64) == 0 and type(holder.layer) is nn.Linear
    assert qat.apply_qat(holder, 4, 32) == 1 and isinstance(holder.layer, qat.QATLinear)


def _tiny(ft: str):
    cfg = apply_overrides(load_preset(DEMO), [f"finetune.type={ft}"])
    model, _, _ = load_base(resolve_model_path(cfg.model.path), cfg)
    mx.random.seed(0)
    apply_finetune(model, cfg)
    assert qat.apply_qat(model, 4, 64) > 0
    return model, cfg


def _batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 200, size=(4, 17))
    mask = np.ones((4, 16), dtype=np.float32)
    mask[:, :5] = 0
    return mx.array(tokens[:, :-1]), mx.array(tokens[:, 1:]), mx.array(mask), mx.ones((2,))


def _flat(metrics, grad):
    return {"loss": metrics["loss"], **dict(tree_flatten(grad))}


@pytest.mark.parametrize("ft", ["lora", "dora", "full"])
def test_compiled_step_sees_the_gate_and_matches_eager(ft):
    model, cfg = _tiny(ft)
    optimizer = optim.AdamW(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    batch = _batch()
    compiled = make_train_step(model, optimizer, cfg, use_scores=False)
    value_and_grad = nn.value_and_grad(model, make_loss_fn(cfg.orpo.beta, False))

    def eager():
        (_, metrics), grad = value_and_grad(model, *batch)
        return _flat(metrics, grad)

    def run_compiled():
        metrics, grad = compiled(*batch, None, False)  # no update: the model stays as it is
        return _flat(metrics, grad)

    results = {}
    for on in (False, True):  # the gate flips after the first compiled call: no stale trace
        qat.set_gate(model, on)
        c, e = run_compiled(), eager()
        mx.eval(c, e)
        assert c.keys() == e.keys() and len(c) > 1
        for k in c:
            assert mx.allclose(c[k], e[k], atol=1e-5, rtol=1e-4).item(), (on, k)
        results[on] = c
    assert abs(results[True]["loss"].item() - results[False]["loss"].item()) > 1e-3
    # ...and back off again: the compiled step follows the data, not the trace.
    qat.set_gate(model, False)
    again = run_compiled()
    assert mx.allclose(again["loss"], results[False]["loss"], atol=1e-6).item()


def test_qat_run_trains_saves_plain_adapters_and_simulates_the_deployed_model(tmp_path):
    from mlx_lm.utils import load

    from trainer.fuse import fuse_run

    settings = ["qat.enable=true", "qat.start_step=2", "qat.bits=4", "training.iters=6",
                "training.steps_per_report=1", "training.steps_per_eval=0"]
    args = [x for s in settings for x in ("--set", s)]
    proc = run_trainer(str(DEMO), "--runs-dir", str(tmp_path), *args)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.splitlines()[0])
    train = [e for e in read_events(run_dir / "metrics.jsonl") if e["event"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 7))
    assert all(math.isfinite(e["loss"]) for e in train)
    log = (run_dir / "train.log").read_text()
    assert "qat: fake-quantizing" in log and "step 2: quantization-aware training on" in log

    saved = mx.load(str(run_dir / "adapters" / "adapters.safetensors"))
    assert saved and all(k.endswith((".lora_a", ".lora_b")) for k in saved)
    base = tomllib.loads((run_dir / "config.toml").read_text())["model"]["resolved_path"]
    adapted, _ = load(base, adapter_path=str(run_dir / "adapters"))  # plain mlx_lm
    plain, _ = load(base)
    tokens = mx.array([[5, 17, 42, 99, 7, 63, 12]])
    assert not np.allclose(np.array(adapted(tokens)), np.array(plain(tokens)), atol=1e-3)

    # The model QAT trains on (gate open) is the fused-then-quantized model it deploys as.
    fused, _ = load(str(fuse_run(run_dir, quantize=4, group_size=64, out=tmp_path / "q4")))
    assert json.loads((tmp_path / "q4" / "config.json").read_text())["quantization"]["bits"] == 4
    qat.apply_qat(adapted, 4, 64)
    qat.set_gate(adapted, True)
    simulated, deployed = (np.array(m(tokens)) for m in (adapted, fused))
    assert np.abs(simulated - deployed).max() < 1e-3, np.abs(simulated - deployed).max()
