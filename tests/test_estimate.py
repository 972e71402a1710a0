"""Cost estimates: the model shape and trainable counts match the real model exactly; the
memory estimate moves the right way with each setting."""

from mlx.utils import tree_flatten

from trainer.pure.config import apply_overrides, config_from_dict
from trainer.pure.estimate import estimate, implied_epochs, model_shape, trainable_params


def test_shape_counts_match_the_built_model():
    from mlx_lm.utils import load

    from trainer.builtin import resolve_builtin_model
    from trainer.model import apply_finetune

    shape = model_shape("builtin:tiny")
    model, _ = load(str(resolve_builtin_model("builtin:tiny")))
    matrices = sum(v.size for k, v in tree_flatten(model.parameters()) if v.ndim == 2)
    assert shape.params == matrices  # every linear and the (tied) embedding; norms excluded
    for overrides in (["finetune.rank=8"], ["finetune.rank=4", "finetune.num_layers=2"], ["finetune.type=dora"]):
        cfg = apply_overrides(config_from_dict({}, "t"), overrides)
        model, _ = load(str(resolve_builtin_model("builtin:tiny")))
        apply_finetune(model, cfg)
        real = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        assert trainable_params(cfg, shape) == real, overrides


def test_memory_moves_the_right_way():
    shape = model_shape("builtin:tiny")
    base = config_from_dict({}, "t")
    e = estimate(base, shape)
    assert estimate(apply_overrides(base, ["training.batch_size=16"]), shape).activations == 2 * e.activations
    assert estimate(apply_overrides(base, ["model.quantize.bits=4"]), shape).weights < e.weights
    assert estimate(apply_overrides(base, ["finetune.type=full"]), shape).optimizer > 4 * e.optimizer
    assert estimate(base, shape, seq_len=48).total_bytes < e.total_bytes  # real lengths below the cap


def test_unknown_model_and_epochs():
    assert model_shape("someorg/not-downloaded") is None
    cfg = config_from_dict({"training": {"iters": 100, "batch_size": 8}}, "t")
    assert implied_epochs(cfg, 400) == 2.0 and implied_epochs(cfg, None) is None


def test_estimate_module_is_pure():
    import subprocess
    import sys

    code = "import sys, trainer.pure.estimate; print([m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
