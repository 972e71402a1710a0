"""The embedded defaults: ``builtin:tiny`` (a model built offline) and ``builtin:demo`` (data).

The names and the data's folder live in ``trainer.pure.builtin_names``, where the app reads
them; this package adds the model builder. Importing it still loads no mlx, because the pure
``trainer.pure.estimate`` reads the tiny model's shape from ``tiny_model``: mlx is loaded
only when ``resolve_builtin_model`` builds the model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.builtin.tiny_model import ensure_tiny_model
from trainer.pure.builtin_names import DEMO_DATA_DIR, TINY_MODEL, resolve_builtin_data, unknown_builtin

__all__ = ["BUILTIN_MODELS", "DEMO_DATA_DIR", "resolve_builtin_data", "resolve_builtin_model"]

BUILTIN_MODELS: dict[str, Callable[[], Path]] = {TINY_MODEL: ensure_tiny_model}


def resolve_builtin_model(spec: str) -> Path:
    """Return the local folder of a builtin model, building it on first use."""
    build = BUILTIN_MODELS.get(spec)
    if build is None:
        raise ValueError(unknown_builtin("model", spec, BUILTIN_MODELS))
    return build()
