"""The ``builtin:`` names (the tiny model and the demo data) and where the bundled data lies.

Pure, so the app can default to them, validate them and count the demo rows without the
MLX side; ``trainer.builtin`` imports these back and builds the model.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"
TINY_MODEL = PREFIX + "tiny"
DEMO_DATA = PREFIX + "demo"

TINY_VOCAB_SIZE = 1024
# builtin:tiny's architecture; vocab_size and the special-token ids are filled in from its
# tokenizer when it is built (trainer.builtin.tiny_model).
TINY_MODEL_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 192,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "attention_bias": False,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}

# The data ships inside the package, beside the generator that writes it.
DEMO_DATA_DIR: Path = Path(__file__).resolve().parent.parent / "builtin" / "demo"
BUILTIN_DATA: dict[str, Path] = {DEMO_DATA: DEMO_DATA_DIR}


def is_builtin(spec: str) -> bool:
    return spec.startswith(PREFIX)


def resolve_builtin_data(spec: str) -> Path:
    """Return the folder holding a builtin dataset's split files."""
    folder = BUILTIN_DATA.get(spec)
    if folder is None:
        raise ValueError(unknown_builtin("dataset", spec, BUILTIN_DATA))
    return folder


def unknown_builtin(kind: str, spec: str, known: dict) -> str:
    return f"unknown builtin {kind} {spec!r} (known: {', '.join(sorted(known))})"
