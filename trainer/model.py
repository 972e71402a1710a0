"""Loading the base model and turning it into what we train (LoRA, DoRA or full weights).

Saved adapters follow mlx-lm's layout (`adapters.safetensors` + `adapter_config.json`) so
`mlx_lm.load(model, adapter_path=...)` and `mlx_lm.generate --adapter-path` take them as-is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from trainer.builtin import resolve_builtin_model
from trainer.pure.builtin_names import is_builtin
from trainer.pure.config import Config
from trainer.pure.messages import first_line, hub_offline
from trainer.pure.run_folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from trainer.pure.runs import atomic_write_text


class ModelError(Exception):
    """The model cannot be loaded or adapted as configured, in one line."""


def resolve_model_path(spec: str) -> Path:
    """The local folder holding the weights: built for `builtin:*`, fetched (or found in the
    hub cache) for a hub id."""
    if is_builtin(spec):
        try:
            return resolve_builtin_model(spec)
        except ValueError as exc:
            raise ModelError(f"model.path: {exc}") from None
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"model.path: {local}: no config.json in this folder")
        return local
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"model.path: {spec}: no such folder")
    from mlx_lm.utils import _download  # the same files mlx_lm.load would fetch

    try:
        return Path(_download(spec))
    except Exception as exc:
        why = "offline and not in the local hub cache" if hub_offline() else first_line(exc)
        raise ModelError(f"model.path: hub model '{spec}': {why}") from None


def load_tokenizer_for(path: Path) -> Any:
    """The tokenizer `mlx_lm.load` gives with the model at `path` (its end-of-sequence ids
    from config.json), without loading the weights."""
    from mlx_lm.utils import load_tokenizer

    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    try:
        return load_tokenizer(Path(path), eos_token_ids=config.get("eos_token_id"))
    except Exception as exc:  # transformers raises many types; the user needs one line
        raise ModelError(f"model.path: {path}: no usable tokenizer: {first_line(exc)}") from None


def load_base(path: Path, cfg: Config, tokenizer: Any = None) -> tuple[nn.Module, Any, Path]:
    """The base model, its tokenizer and the folder `mlx_lm.load` must be given to rebuild
    exactly this base (what a run records as `model.resolved_path`).

    With `model.quantize.bits` set and a float base, the base is quantized once into a cached
    copy (see :func:`quantized_copy`) and loaded from there: the adapters are trained on, and
    later loaded onto, the very same quantized weights. A base that is already quantized (a
    pre-quantized MLX model) loads as it is. A `tokenizer` already loaded for this base
    (`load_tokenizer_for`) is used instead of loading it again."""
    from mlx_lm.utils import load, load_model

    bits = cfg.model.quantize.bits
    if bits:
        path = quantized_copy(path, bits, cfg.model.quantize.group_size)
    try:
        if tokenizer is None:
            model, tokenizer = load(str(path))
        else:  # already loaded (to size the run before its weights): the weights alone
            model, _ = load_model(Path(path))
    except Exception as exc:
        raise ModelError(f"model.path: {path}: {first_line(exc)}") from None
    return model, tokenizer, path


def _is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def _config_is_quantized(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "quantization" in config or "quantization_config" in config


def quantized_copies_dir() -> Path:
    from trainer.builtin.tiny_model import cache_root

    return cache_root() / "quantized"


def quantized_copy_path(path: Path, bits: int, group_size: int) -> Path:
    """Where `quantized_copy` keeps the quantized copy of a float base."""
    import hashlib

    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return quantized_copies_dir() / f"{Path(path).name}-{digest}-q{bits}g{group_size}"


def needs_quantizing(path: Path, cfg: Config) -> bool:
    """Whether loading this base will first quantize it (a float base with
    model.quantize.bits set, not yet in the cache): the float model is then loaded whole."""
    bits = cfg.model.quantize.bits
    return bool(bits) and not _config_is_quantized(Path(path)) and \
        not (quantized_copy_path(path, bits, cfg.model.quantize.group_size) / "config.json").is_file()


def quantized_copy(path: Path, bits: int, group_size: int) -> Path:
    """The folder of `path` quantized to `bits`/`group_size` in mlx-lm's format, written once
    into the cache (`<cache>/quantized/<name>-<digest>-q<bits>g<group>`) and reused.

    mlx_lm rebuilds a quantized base only from a folder whose config.json has a
    "quantization" entry, so adapters trained on a quantized-on-load base need this copy to
    load anywhere else. A base that is already quantized is returned unchanged."""
    path = Path(path)
    if _config_is_quantized(path):
        return path
    target = quantized_copy_path(path, bits, group_size)
    if (target / "config.json").is_file():
        return target
    from mlx_lm.utils import load, quantize_model

    try:
        model, tokenizer, config = load(str(path), return_config=True)
    except Exception as exc:
        raise ModelError(f"model.path: {path}: {first_line(exc)}") from None
    if _is_quantized(model):
        return path
    try:
        model, config = quantize_model(model, config, group_size, bits)
    except Exception as exc:
        raise ModelError(f"model.quantize: bits={bits}, group_size={group_size}: {first_line(exc)}") from None
    if not _is_quantized(model):
        raise ModelError(
            f"model.quantize.group_size = {group_size}: no layer of this model has a width divisible by it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    _quiet_save(staging, path, model, tokenizer, config)
    try:
        os.rename(staging, target)
    except OSError:  # another process wrote the same copy first: theirs is as good
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _quiet_save(dest: Path, src: Path, model: nn.Module, tokenizer: Any, config: dict) -> None:
    """mlx_lm's `save` (weights, config.json with any "quantization" entry, tokenizer files)."""
    import contextlib
    import io

    from mlx_lm.utils import save

    with contextlib.redirect_stdout(io.StringIO()):
        save(dest, str(src), model, tokenizer, config, donate_model=False)


def adapter_config(cfg: Config, n_layers: int) -> dict[str, Any]:
    """What mlx-lm's `load_adapters` reads to rebuild the adapted model."""
    ft = cfg.finetune
    num_layers = n_layers if ft.num_layers < 0 else min(ft.num_layers, n_layers)
    return {
        "fine_tune_type": ft.type,
        "num_layers": num_layers,
        "lora_parameters": {
            "rank": ft.rank,
            "scale": ft.scale,
            "dropout": ft.dropout,
            **({"keys": list(ft.keys)} if ft.keys else {}),
        },
    }


def apply_finetune(model: nn.Module, cfg: Config) -> dict[str, Any]:
    """Freeze the base and add the trainable part; returns the adapter config to save."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    acfg = adapter_config(cfg, len(model.layers))
    if cfg.finetune.type == "full" and _is_quantized(model):
        raise ModelError(
            "finetune.type = full: the base model is quantized and its weights cannot be trained; use lora or dora"
        )
    model.freeze()
    if cfg.finetune.type == "full":
        # -1: every weight (embeddings, norms, head); N: only the top N transformer blocks.
        targets = [model] if cfg.finetune.num_layers < 0 else model.layers[-acfg["num_layers"] :]
        for part in targets:
            part.unfreeze()
    else:
        try:
            linear_to_lora_layers(
                model,
                acfg["num_layers"],
                acfg["lora_parameters"],
                use_dora=cfg.finetune.type == "dora",
            )
        except (ValueError, KeyError) as exc:
            raise ModelError(f"finetune: {first_line(exc)}") from None
    if not tree_flatten(model.trainable_parameters()):
        raise ModelError(
            f"finetune.keys: {list(cfg.finetune.keys)} matches no layer of this model"
        )
    return acfg


def trainable_weights(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def publish_adapters(folder: Path, weights_file: Path, acfg: dict[str, Any]) -> None:
    """Make a checkpoint's adapter weights the run's current ones, in mlx-lm's layout.
    Copied, not re-serialized from the model; written atomically so a reader (mlx_lm, a
    fuse, the app) never sees a half-written file."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".adapters.tmp.safetensors"
    shutil.copyfile(weights_file, tmp)
    os.replace(tmp, folder / ADAPTER_WEIGHTS)
    atomic_write_text(folder / ADAPTER_CONFIG, json.dumps(acfg, indent=2) + "\n")


def output_head(model: nn.Module):
    """The function from final hidden states to logits, for mlx-lm's usual layout (a body at
    `model.model`, then `lm_head` or the tied embedding). None when the model is laid out
    otherwise; the caller checks numerically that body + head equals the whole model."""
    body = getattr(model, "model", None)
    if body is None:
        return None
    head = getattr(model, "lm_head", None)
    if head is not None:
        return head
    embed = getattr(body, "embed_tokens", None)
    return embed.as_linear if embed is not None and hasattr(embed, "as_linear") else None
