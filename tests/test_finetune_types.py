"""LoRA, DoRA and full fine-tuning, on a float and a 4-bit (QLoRA) base, through the real
`orpo-train` CLI; what each run saves loads in mlx_lm; `orpo-train fuse` writes standalone
models that mlx_lm loads and generates with, without adapters."""

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import tomllib
from trainer_helpers import DEMO, run_trainer

from trainer.pure.events import read_events

# (fine-tune type, base bits); full fine-tuning of a quantized base is refused (below).
COMBOS = [("lora", 0), ("lora", 4), ("dora", 0), ("dora", 4), ("full", 0)]
LEARNING_RATE = {"lora": 1e-3, "dora": 1e-3, "full": 1e-4}


def _settings(ft: str, bits: int) -> list[str]:
    out = []
    for item in (
        "training.iters=6", "training.steps_per_eval=0", "training.steps_per_report=1",
        f"training.learning_rate={LEARNING_RATE[ft]}", f"finetune.type={ft}", f"model.quantize.bits={bits}",
    ):
        out += ["--set", item]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train each combination once, lazily: {(type, bits): run_dir}."""
    root = tmp_path_factory.mktemp("ft-runs")
    done: dict = {}

    def get(ft: str, bits: int) -> Path:
        if (ft, bits) not in done:
            proc = run_trainer(str(DEMO), "--runs-dir", str(root / f"{ft}-{bits}"), *_settings(ft, bits))
            assert proc.returncode == 0, proc.stderr
            done[ft, bits] = Path(proc.stdout.splitlines()[0])
        return done[ft, bits]

    return get


def _resolved(run_dir: Path) -> str:
    return tomllib.loads((run_dir / "config.toml").read_text())["model"]["resolved_path"]


def _prompt_tokens(tokenizer):
    messages = [{"role": "user", "content": "What colour is snow?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt, mx.array([tokenizer.encode(prompt)])


def _quantized_layers(model) -> int:
    return sum(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())


@pytest.mark.parametrize("ft,bits", COMBOS, ids=[f"{f}-{'q4' if b else 'float'}" for f, b in COMBOS])
def test_trains_and_the_result_loads_in_mlx_lm(runs, ft, bits):
    from mlx_lm import generate, load

    run_dir = runs(ft, bits)
    train = [e for e in read_events(run_dir / "metrics.jsonl") if e["event"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 7))
    assert train[-1]["loss"] < train[0]["loss"] - 0.3, (train[0]["loss"], train[-1]["loss"])

    acfg = json.loads((run_dir / "adapters" / "adapter_config.json").read_text())
    assert acfg["fine_tune_type"] == ft
    base_path = _resolved(run_dir)
    base_config = json.loads((Path(base_path) / "config.json").read_text())
    assert ("quantization" in base_config) == bool(bits)
    if bits:
        assert base_config["quantization"]["bits"] == 4

    adapted, tokenizer = load(base_path, adapter_path=str(run_dir / "adapters"))
    base, _ = load(base_path)
    prompt, tokens = _prompt_tokens(tokenizer)
    assert not np.allclose(np.array(adapted(tokens)), np.array(base(tokens)), atol=1e-3)
    assert isinstance(generate(adapted, tokenizer, prompt=prompt, max_tokens=8), str)
    if bits:  # QLoRA: the adapters wrap the quantized layers of the base
        q_proj = adapted.model.layers[0].self_attn.q_proj
        assert isinstance(q_proj.linear, nn.QuantizedLinear)
    if ft == "full":
        saved = mx.load(str(run_dir / "adapters" / "adapters.safetensors"))
        assert "model.embed_tokens.weight" in saved  # num_layers = -1: every weight trains


def test_full_fine_tuning_of_a_quantized_base_is_refused(tmp_path, runs):
    proc = run_trainer(str(DEMO), "--runs-dir", str(tmp_path), *_settings("full", 4))
    assert proc.returncode == 2
    assert "full fine-tuning cannot train a quantized base" in proc.stderr
    assert proc.stderr.count("\n") == 1
    # A pre-quantized model given as model.path (no model.quantize) is refused too.
    prequantized = _resolved(runs("lora", 4))
    proc = run_trainer(str(DEMO), "--runs-dir", str(tmp_path), *_settings("full", 0), "--set", f"model.path={prequantized}")
    assert proc.returncode == 2
    assert "base model is quantized" in proc.stderr.strip().splitlines()[-1]


def test_unsupported_quantization_bits_are_a_config_error(tmp_path):
    proc = run_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "model.quantize.bits=7")
    assert proc.returncode == 2
    assert "model.quantize.bits" in proc.stderr and "must be one of" in proc.stderr


def _fuse(*args: str):
    return run_trainer("fuse", *args)


@pytest.mark.parametrize("ft,bits", COMBOS, ids=[f"{f}-{'q4' if b else 'float'}" for f, b in COMBOS])
def test_fused_model_loads_without_adapters_and_matches(runs, ft, bits):
    from mlx_lm import generate, load

    run_dir = runs(ft, bits)
    proc = _fuse(str(run_dir))
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip())
    assert out == run_dir / "fused" and (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()

    fused, tokenizer = load(str(out))
    adapted, _ = load(_resolved(run_dir), adapter_path=str(run_dir / "adapters"))
    prompt, tokens = _prompt_tokens(tokenizer)
    assert (_quantized_layers(fused) > 0) == bool(bits)
    a, b = np.array(fused(tokens)), np.array(adapted(tokens))
    if bits:
        # A quantized base re-quantizes the fused weights: far closer to the adapted model
        # than the base is, not equal.
        base, _ = load(_resolved(run_dir))
        assert np.abs(a - b).mean() < 0.5 * np.abs(np.array(base(tokens)) - b).mean()
    else:
        assert np.abs(a - b).max() < 1e-3
    assert isinstance(generate(fused, tokenizer, prompt=prompt, max_tokens=8), str)


def test_fuse_quantize_writes_a_quantized_model(runs, tmp_path):
    from mlx_lm import generate, load

    run_dir = runs("lora", 0)
    out = tmp_path / "q4"
    proc = _fuse(str(run_dir), "--quantize", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 64
    model, tokenizer = load(str(out))
    assert _quantized_layers(model) > 0
    prompt, _ = _prompt_tokens(tokenizer)
    assert isinstance(generate(model, tokenizer, prompt=prompt, max_tokens=8), str)


def test_fuse_best(runs):
    run_dir = runs("lora", 0)
    best = run_dir / "adapters" / "best"
    shutil.rmtree(best, ignore_errors=True)
    proc = _fuse(str(run_dir), "--best")
    assert proc.returncode == 2
    assert "no best adapters" in proc.stderr and proc.stderr.count("\n") == 1

    best.mkdir()
    for name in ("adapters.safetensors", "adapter_config.json"):
        shutil.copyfile(run_dir / "adapters" / name, best / name)
    proc = _fuse(str(run_dir), "--best")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == run_dir / "fused-best"
    assert (run_dir / "fused-best" / "model.safetensors").is_file()


def test_fuse_bad_input(tmp_path):
    proc = _fuse(str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
