"""The embedded defaults: ``builtin:tiny`` (a model built offline) and ``builtin:demo`` (data).

Part of the pure half of ``trainer``: importing this package must not import mlx, because
the TUI imports it to validate presets. The model is only built, and mlx only loaded,
when ``resolve_builtin_model`` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.builtin.demo_data import DEMO_DIR
from trainer.builtin.tiny_model import ensure_tiny_model

PREFIX = "builtin:"

BUILTIN_MODELS: dict[str, Callable[[], Path]] = {"builtin:tiny": ensure_tiny_model}
DEMO_DATA_DIR: Path = DEMO_DIR
BUILTIN_DATA: dict[str, Path] = {"builtin:demo": DEMO_DATA_DIR}


def is_builtin(spec: str) -> bool:
    return spec.startswith(PREFIX)


def resolve_builtin_model(spec: str) -> Path:
    """Return the local folder of a builtin model, building it on first use."""
    build = BUILTIN_MODELS.get(spec)
    if build is None:
        raise ValueError(_unknown("model", spec, BUILTIN_MODELS))
    return build()


def resolve_builtin_data(spec: str) -> Path:
    """Return the folder holding a builtin dataset's ``train.jsonl`` and ``valid.jsonl``."""
    folder = BUILTIN_DATA.get(spec)
    if folder is None:
        raise ValueError(_unknown("dataset", spec, BUILTIN_DATA))
    return folder


def _unknown(kind: str, spec: str, known: dict) -> str:
    return f"unknown builtin {kind} {spec!r} (known: {', '.join(sorted(known))})"
