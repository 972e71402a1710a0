"""``builtin:tiny`` — a tiny qwen3-style model built offline, on first use, into a cache.

The model exists so that the trainer, its tests and a first-time user can run a complete
ORPO experiment with no network and no download: a byte-level BPE tokenizer trained on
text bundled with the package, a config for mlx-lm's ``qwen3`` architecture and random
weights from a fixed seed. Everything is deterministic, so the folder name can be a hash
of the recipe and a changed recipe simply lands in a new folder.

mlx and tokenizers are imported inside the build functions: ``trainer.builtin`` is
imported by the TUI, which must never load mlx.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from trainer.builtin.demo_data import DEMO_DIR

# The architecture lives in the pure half, where the app's memory estimate reads it.
from trainer.pure.builtin_names import TINY_MODEL_CONFIG as MODEL_CONFIG
from trainer.pure.builtin_names import TINY_VOCAB_SIZE as VOCAB_SIZE

# Bump when the build changes in a way the config and texts below do not capture
# (e.g. how weights are initialised or which files are written).
RECIPE_VERSION = 1

WEIGHT_SEED = 1234
CORPUS_PATH = Path(__file__).resolve().parent / "corpus.txt"
TOKENIZER_TEXT_FILES = (CORPUS_PATH, DEMO_DIR / "train.jsonl", DEMO_DIR / "valid.jsonl")

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Listed first so they get the ids 0, 1, 2 whatever the training text is.
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)


CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def cache_root() -> Path:
    """Where built artefacts live: ``$ORPO_TUI_CACHE``, else ``~/.cache/orpo-tui``."""
    configured = os.environ.get("ORPO_TUI_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "orpo-tui"


def recipe_hash() -> str:
    """A short digest of everything the build depends on, used as the cache key."""
    recipe = {
        "version": RECIPE_VERSION,
        "seed": WEIGHT_SEED,
        "vocab_size": VOCAB_SIZE,
        "special_tokens": SPECIAL_TOKENS,
        "config": MODEL_CONFIG,
        "chat_template": CHAT_TEMPLATE,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for path in TOKENIZER_TEXT_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_tiny_model(cache_dir: Path | None = None) -> Path:
    """Return the folder of the tiny model, building it first if it is not cached yet.

    ``cache_dir`` overrides the cache root. The build happens in a temporary folder beside
    the target and is renamed into place, so a reader never sees a half-written model and
    two processes building at once cannot corrupt each other: the loser discards its copy,
    which is byte-identical anyway.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / "models" / f"tiny-qwen3-{recipe_hash()}"
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; the cached model is not a secret
    try:
        build_tiny_model(staging)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MODEL_FILES)


def _move_into_place(staging: Path, target: Path) -> None:
    if target.exists() and not _is_complete(target):
        # Damaged by something other than this function (we only ever rename complete
        # folders), so no concurrent builder owns it; clear it so the rename can succeed.
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:
        if not _is_complete(target):
            raise


def build_tiny_model(dest: Path) -> None:
    """Write the complete model folder into ``dest`` (which must exist).

    Reseeds mlx's global random generator, as instantiating an mlx model draws from it.
    """
    tokenizer = _train_tokenizer(_tokenizer_texts())
    tokenizer.save(str(dest / "tokenizer.json"))
    config = _model_config(tokenizer)
    _write_json(dest / "config.json", config)
    _write_json(dest / "tokenizer_config.json", _tokenizer_config())
    _write_json(dest / "special_tokens_map.json", _special_tokens_map())
    _write_weights(config, dest / "model.safetensors")


def _tokenizer_texts() -> list[str]:
    texts = CORPUS_PATH.read_text(encoding="utf-8").splitlines()
    for path in TOKENIZER_TEXT_FILES[1:]:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.extend((row["prompt"], row["chosen"], row["rejected"]))
    # The chat template puts role names on their own line; give them tokens of their own.
    texts.extend(["system\n", "user\n", "assistant\n"] * 8)
    return texts


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        # Every byte gets a token, so any text (not just the training text) encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _model_config(tokenizer) -> dict:
    return {
        **MODEL_CONFIG,
        "vocab_size": tokenizer.get_vocab_size(),
        # Same convention as Qwen's chat models: generation stops at <|im_end|>.
        "bos_token_id": tokenizer.token_to_id(PAD_TOKEN),
        "eos_token_id": tokenizer.token_to_id(IM_END),
        "pad_token_id": tokenizer.token_to_id(PAD_TOKEN),
    }


def _tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_CONFIG["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
    }


def _special_tokens_map() -> dict:
    return {"eos_token": IM_END, "pad_token": PAD_TOKEN}


def _write_weights(config: dict, path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.qwen3 import Model, ModelArgs

    mx.random.seed(WEIGHT_SEED)
    model = Model(ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(path), weights, metadata={"format": "mlx"})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
