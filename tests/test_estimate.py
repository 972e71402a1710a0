"""Cost estimates: the model shape and trainable counts match the real model exactly; each
memory term moves the right way with its setting; the batch shapes the MLX half prices are
the ones training runs. (How close the estimate comes to measured peaks is a benchmark:
tests/bench/estimate_memory.py.)"""

from mlx.utils import tree_flatten

from trainer.pure.config import apply_overrides, config_from_dict
from trainer.pure.estimate import (
    Pass,
    StepShape,
    estimate,
    implied_epochs,
    memory_counts,
    model_shape,
    shape_from_config,
    step_bytes,
    trainable_params,
    weight_bytes,
    worst_step,
)


def _cfg(*overrides):
    return apply_overrides(config_from_dict({}, "t"), list(overrides))


def test_shape_counts_match_the_built_model():
    import mlx.nn as nn
    from mlx_lm.utils import load

    from trainer.builtin import resolve_builtin_model
    from trainer.model import apply_finetune

    shape = model_shape("builtin:tiny")
    model, _ = load(str(resolve_builtin_model("builtin:tiny")))
    matrices = sum(v.size for k, v in tree_flatten(model.parameters()) if v.ndim == 2)
    assert shape.params == matrices  # every linear and the (tied) embedding; norms excluded
    for overrides in (["finetune.rank=8"], ["finetune.rank=4", "finetune.num_layers=2"], ["finetune.type=dora"],
                      ["finetune.keys=['self_attn.q_proj', 'mlp.down_proj']"], ["finetune.type=full"],
                      ["finetune.type=full", "finetune.num_layers=1"]):
        cfg = _cfg(*overrides)
        model, _ = load(str(resolve_builtin_model("builtin:tiny")))
        apply_finetune(model, cfg)
        real = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        if cfg.finetune.type == "full":  # the norms' few weights are left out
            assert 0.99 * real <= trainable_params(cfg, shape) <= real, overrides
        else:
            assert trainable_params(cfg, shape) == real, overrides
    # A 4-bit base holds what mlx-lm's quantization makes of it, byte for byte.
    model, _ = load(str(resolve_builtin_model("builtin:tiny")))
    nn.quantize(model, group_size=64, bits=4)
    stored = sum(v.nbytes for k, v in tree_flatten(model.parameters()) if "norm" not in k)
    assert weight_bytes(_cfg("model.quantize.bits=4"), shape) == stored


def test_each_term_moves_with_its_setting():
    shape = model_shape("builtin:tiny")
    base = _cfg()
    step = worst_step(base)
    counts = memory_counts(base, shape, step)
    assert estimate(_cfg("training.batch_size=16"), shape).activations > 1.9 * estimate(base, shape).activations
    assert estimate(_cfg("model.quantize.bits=4"), shape).weights < estimate(base, shape).weights / 4
    assert estimate(_cfg("finetune.type=full"), shape).optimizer > 4 * estimate(base, shape).optimizer
    assert counts["dora_outputs"] == counts["qat"] == counts["dequantized"] == 0
    assert memory_counts(_cfg("finetune.type=dora"), shape, step)["dora_outputs"] > 0
    assert memory_counts(_cfg("qat.enable=true"), shape, step)["qat"] > 0  # QAT's fake-quantized copies
    assert memory_counts(_cfg("finetune.type=dora", "model.quantize.bits=4"), shape, step)["dequantized"] > 0
    assert step_bytes(_cfg("finetune.type=dora"), shape, step) > step_bytes(base, shape, step)
    assert step_bytes(_cfg("qat.enable=true"), shape, step) > step_bytes(base, shape, step)
    # Gradients reach only the adapted top blocks: fewer of them keep fewer activations.
    assert memory_counts(_cfg("finetune.num_layers=1"), shape, step)["mlp"] == counts["mlp"] / shape.layers
    # Metal's fused attention keeps no score matrices; the CPU's keeps each layer's.
    assert memory_counts(base, shape, step, fused_attention=True)["attention"] == 0 < counts["attention"]


def test_real_batches_cost_less_than_the_worst_case():
    shape = model_shape("builtin:tiny")
    cfg = _cfg()
    short = StepShape((Pass(16, 40, 40),), 16 * 20)
    assert step_bytes(cfg, shape, short) < step_bytes(cfg, shape, worst_step(cfg))
    # A shared prefix is run once and not through its last layer's MLP.
    shared = StepShape((Pass(8, 24, 24, headed=False), Pass(8, 16, 40), Pass(8, 16, 40)), 16 * 16)
    plain = StepShape((Pass(16, 40, 40),), 16 * 16)
    assert step_bytes(cfg, shape, shared) < step_bytes(cfg, shape, plain)


def test_a_pre_quantized_base_is_priced_at_its_own_bits():
    arch = {"hidden_size": 256, "num_hidden_layers": 2, "intermediate_size": 512, "num_attention_heads": 4,
            "vocab_size": 1000, "quantization": {"group_size": 64, "bits": 4}}
    quantized, plain = shape_from_config(arch), shape_from_config({k: v for k, v in arch.items() if k != "quantization"})
    assert weight_bytes(_cfg(), quantized) < weight_bytes(_cfg(), plain) / 4


def test_step_shapes_follow_the_layout_training_uses():
    from trainer import data as D
    from trainer.layouts import BatchLayout
    from trainer.memory import step_shape

    pairs = [D.Pair(tuple(range(3, 23)), (30, 31, 32, 33), (40, 41), 1.0) for _ in range(4)]
    layout = BatchLayout(0, gathered=True, sharing=True)
    s = step_shape(layout.host_batch(pairs), True)
    assert [(p.rows, p.headed) for p in s.passes] == [(4, False), (4, True), (4, True)]  # the prompt once
    assert s.projected == 4 * (4 + 2)  # only the answers' tokens reach the vocabulary
    plain = step_shape(D.collate(pairs, 0), False)
    assert plain.passes == (Pass(8, 32, 32),) and plain.projected == 8 * 32  # padded to 16, all projected


def test_unknown_model_and_epochs():
    assert model_shape("someorg/not-downloaded") is None
    cfg = config_from_dict({"training": {"iters": 100, "batch_size": 8}}, "t")
    assert implied_epochs(cfg, 400) == 2.0 and implied_epochs(cfg, None) is None


def test_estimate_modules_are_pure():
    import subprocess
    import sys

    code = ("import sys, trainer.pure.estimate, trainer.pure.system_memory; "
            "print([m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
