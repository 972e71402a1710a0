"""The embedded defaults: the bundled demo data and the tiny model built offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import builtin
from trainer.builtin import demo_data, tiny_model

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def _rows(split: str) -> list[dict]:
    text = (builtin.DEMO_DATA_DIR / f"{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _isolate(mp: pytest.MonkeyPatch, root: Path) -> None:
    mp.setenv("ORPO_TUI_CACHE", str(root / "cache"))
    mp.setenv("HF_HOME", str(root / "hf"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("MLX_DISABLE_COMPILE", "1")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    _isolate(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """One build shared by the tests that only read the model."""
    root = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, root)
        return tiny_model.ensure_tiny_model()


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- demo data -------------------------------------------------------------------------


def test_demo_files_equal_generator_output():
    assert demo_data.stale_files() == []
    for split, rows in demo_data.build_splits().items():
        assert _rows(split) == rows


def test_demo_rows_are_well_formed():
    for split in demo_data.SPLITS:
        for row in _rows(split):
            assert set(row) == {"prompt", "chosen", "rejected"}
            assert all(isinstance(v, str) and v.strip() for v in row.values()), row
            assert row["chosen"] != row["rejected"], row


def test_demo_sizes():
    assert 400 <= len(_rows("train")) <= 600
    assert 64 <= len(_rows("valid")) <= 100
    total = sum((builtin.DEMO_DATA_DIR / f"{s}.jsonl").stat().st_size for s in demo_data.SPLITS)
    assert total < 200_000


def test_valid_prompts_are_held_out():
    train_prompts = {row["prompt"] for row in _rows("train")}
    valid_prompts = [row["prompt"] for row in _rows("valid")]
    assert not train_prompts & set(valid_prompts)
    assert len(set(valid_prompts)) == len(valid_prompts)


# --- tiny model: building and caching ---------------------------------------------------


def test_importing_builtin_loads_no_mlx():
    code = (
        "import sys, trainer.builtin; "
        "bad = [m for m in ('mlx', 'mlx_lm', 'tokenizers', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_is_deterministic_across_processes(tmp_path):
    here = tiny_model.ensure_tiny_model(tmp_path / "a")
    # A second interpreter, so hash-map seeds and allocation differ from this one.
    code = "import sys; from trainer.builtin.tiny_model import ensure_tiny_model as e; print(e(sys.argv[1]))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "b")],
        capture_output=True, text=True, check=True, env=os.environ.copy(),
    )
    there = Path(out.stdout.strip().splitlines()[-1])
    assert here.name == there.name
    assert _file_bytes(here) == _file_bytes(there)
    assert set(_file_bytes(here)) == set(tiny_model.MODEL_FILES)


def test_second_call_uses_cache(tmp_path, monkeypatch):
    first = tiny_model.ensure_tiny_model()
    assert first.is_relative_to(tmp_path / "cache")
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    def no_rebuild(dest):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny_model, "build_tiny_model", no_rebuild)
    assert tiny_model.ensure_tiny_model() == first
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamps
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_changed_recipe_gets_a_new_folder(monkeypatch):
    before = tiny_model.recipe_hash()
    monkeypatch.setattr(tiny_model, "RECIPE_VERSION", tiny_model.RECIPE_VERSION + 1)
    assert tiny_model.recipe_hash() != before


def test_losing_a_build_race_keeps_the_winner(tmp_path, monkeypatch):
    real_build = tiny_model.build_tiny_model
    winner = {}

    def build_while_another_process_finishes_first(dest: Path) -> None:
        real_build(dest)
        target = tmp_path / "cache" / "models" / f"tiny-qwen3-{tiny_model.recipe_hash()}"
        shutil.copytree(dest, target)
        winner.update(_file_bytes(target))

    monkeypatch.setattr(tiny_model, "build_tiny_model", build_while_another_process_finishes_first)
    path = tiny_model.ensure_tiny_model()
    assert _file_bytes(path) == winner
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # our staging copy is gone


# --- tiny model: what loads it ----------------------------------------------------------


def test_config_agrees_with_tokenizer(model_dir):
    from tokenizers import Tokenizer

    config = json.loads((model_dir / "config.json").read_text())
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert config["model_type"] == "qwen3"
    assert config["vocab_size"] == tok.get_vocab_size()
    assert config["eos_token_id"] == tok.token_to_id(IM_END)
    assert config["tie_word_embeddings"] is True


def test_mlx_lm_loads_and_generates(model_dir):
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(model_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What colour is a banana?"}],
        add_generation_prompt=True, tokenize=False,
    )
    text = mlx_lm.generate(model, tokenizer, prompt=prompt, max_tokens=10)
    assert isinstance(text, str) and text


def test_tokenizer_round_trips_demo_text(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = [v for split in demo_data.SPLITS for row in _rows(split) for v in row.values()]
    texts.append("Unseen text: Zürich, naïve, 😀, tabs\tand\nnewlines.")
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text


def test_chat_template_renders_chatml(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids(IM_START)  # one token, not split up
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"


# --- resolving builtin: names -----------------------------------------------------------


def test_resolve_builtin_data():
    assert builtin.resolve_builtin_data("builtin:demo") == builtin.DEMO_DATA_DIR
    assert (builtin.DEMO_DATA_DIR / "train.jsonl").is_file()
    with pytest.raises(ValueError, match=r"^unknown builtin dataset 'builtin:nope' \(known: builtin:demo\)$"):
        builtin.resolve_builtin_data("builtin:nope")


def test_resolve_builtin_model(tmp_path):
    path = builtin.resolve_builtin_model("builtin:tiny")
    assert path.is_relative_to(tmp_path / "cache") and (path / "model.safetensors").is_file()
    with pytest.raises(ValueError, match=r"^unknown builtin model 'builtin:xyz' \(known: builtin:tiny\)$"):
        builtin.resolve_builtin_model("builtin:xyz")
