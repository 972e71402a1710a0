"""mlx-lm-lora YAML import and export: mapped fields survive a round trip, the rest is named."""

import pytest
import yaml

from trainer.pure.config import config_from_dict, get_value
from trainer.pure.interop import DIRECT, LORA, InteropError, export_yaml, import_yaml

PEER_YAML = """
model: mlx-community/Qwen3-0.6B-4bit
train: true
train_mode: orpo
train_type: dora
data: ./pairs
seed: 7
num_layers: 8
batch_size: 2
iters: 300
gradient_accumulation_steps: 4
val_batches: 10
learning_rate: 2.0e-5
steps_per_report: 5
steps_per_eval: 50
save_every: 25
max_seq_length: 1024
beta: 0.25
reward_scaling: 1.0
load_in_4bits: true
lora_parameters:
  rank: 16
  scale: 32.0
  dropout: 0.05
  keys: [self_attn.q_proj, self_attn.v_proj]
lr_schedule:
  name: cosine_decay
  arguments: [2.0e-5, 280, 1.0e-7]
  warmup: 20
optimizer: adamw
optimizer_config:
  adamw:
    weight_decay: 0.01
adapter_path: adapters/qwen
grad_checkpoint: true
wandb: my-project
fuse: true
"""


def test_import_maps_every_equivalent_and_names_the_rest():
    raw, unmapped = import_yaml(PEER_YAML)
    cfg = config_from_dict(raw, "t")
    assert cfg.model.path == "mlx-community/Qwen3-0.6B-4bit" and cfg.model.quantize.bits == 4
    assert (cfg.finetune.type, cfg.finetune.rank, cfg.finetune.scale, cfg.finetune.dropout) == ("dora", 16, 32.0, 0.05)
    assert cfg.finetune.keys == ("self_attn.q_proj", "self_attn.v_proj")
    assert (cfg.training.lr_schedule, cfg.training.warmup_steps, cfg.training.min_learning_rate) == ("cosine", 20, 1e-7)
    assert (cfg.training.grad_accumulation_steps, cfg.training.weight_decay, cfg.orpo.beta) == (4, 0.01, 0.25)
    assert sorted(unmapped) == ["adapter_path", "fuse", "grad_checkpoint", "wandb"]


def test_round_trip_keeps_every_mapped_field():
    raw, _ = import_yaml(PEER_YAML)
    text, unmapped = export_yaml(config_from_dict(raw, "t"))
    again = yaml.safe_load(text)
    original = yaml.safe_load(PEER_YAML)
    for key in DIRECT:
        assert again[key] == original[key], key
    for key in LORA:
        assert again["lora_parameters"][key] == original["lora_parameters"][key], key
    for key in ("load_in_4bits", "lr_schedule", "optimizer", "optimizer_config", "train_mode"):
        assert again[key] == original[key], key
    raw2, unmapped2 = import_yaml(text)
    assert raw2 == raw and unmapped2 == []


def test_export_lists_what_the_peer_cannot_express():
    cfg = config_from_dict({"data": {"prompt_feature": "question", "valid_fraction": 0.1},
                            "model": {"quantize": {"bits": 3}}, "description": "x"}, "t")
    text, unmapped = export_yaml(cfg)
    assert any(u.startswith("data.prompt_feature") for u in unmapped)
    assert any(u.startswith("data.valid_fraction") for u in unmapped)
    assert any(u.startswith("model.quantize.bits = 3") for u in unmapped)
    assert any(u.startswith("description") for u in unmapped)
    assert "load_in_3bits" not in text and get_value(cfg, "orpo.beta") == yaml.safe_load(text)["beta"]


@pytest.mark.parametrize("text, message", [
    ("train_mode: dpo\n", "only ORPO"),
    ("model: [unclosed\n", "not valid YAML"),
    ("beta: -1\n", "orpo.beta"),
])
def test_bad_yaml_is_one_clear_line(text, message):
    with pytest.raises(InteropError, match=message) as err:
        import_yaml(text)
    assert "\n" not in str(err.value)


def test_cli_import_then_export(tmp_path):
    import subprocess
    import sys

    from trainer.pure.config import load_preset

    (tmp_path / "peer.yaml").write_text(PEER_YAML)
    imp = subprocess.run([sys.executable, "-m", "trainer", "import-yaml", str(tmp_path / "peer.yaml"), "--out",
                          str(tmp_path / "p.toml")], capture_output=True, text=True)
    assert imp.returncode == 0, imp.stderr
    assert "not carried over: wandb" in imp.stderr
    assert load_preset(tmp_path / "p.toml").finetune.rank == 16
    exp = subprocess.run([sys.executable, "-m", "trainer", "export-yaml", str(tmp_path / "p.toml")], capture_output=True, text=True)
    assert exp.returncode == 0 and yaml.safe_load(exp.stdout)["lora_parameters"]["rank"] == 16
    bad = subprocess.run([sys.executable, "-m", "trainer", "import-yaml", str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
