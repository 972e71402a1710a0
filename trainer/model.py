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
from trainer.config import Config
from trainer.messages import first_line, hub_offline
from trainer.runs import atomic_write_text


class ModelError(Exception):
    """The model cannot be loaded or adapted as configured, in one line."""


def resolve_model_path(spec: str) -> Path:
    """The local folder holding the weights: built for `builtin:*`, fetched (or found in the
    hub cache) for a hub id."""
    if spec.startswith("builtin:"):
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


def load_base(path: Path, cfg: Config) -> tuple[nn.Module, Any]:
    from mlx_lm.utils import load

    try:
        model, tokenizer = load(str(path))
    except Exception as exc:
        raise ModelError(f"model.path: {path}: {first_line(exc)}") from None
    bits, group = cfg.model.quantize.bits, cfg.model.quantize.group_size
    if bits and not _is_quantized(model):
        nn.quantize(model, group_size=group, bits=bits)
    return model, tokenizer


def _is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())


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
    model.freeze()
    if cfg.finetune.type == "full":
        for layer in model.layers[-acfg["num_layers"] :]:
            layer.unfreeze()
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
    os.replace(tmp, folder / "adapters.safetensors")
    atomic_write_text(folder / "adapter_config.json", json.dumps(acfg, indent=2) + "\n")
