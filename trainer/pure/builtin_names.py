"""The ``builtin:`` names (the tiny model and the demo data) and where the bundled data lies.

Pure, so the app can default to them, validate them and count the demo rows without the
MLX side; ``trainer.builtin`` imports these back and builds the model.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"
TINY_MODEL = PREFIX + "tiny"
DEMO_DATA = PREFIX + "demo"

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
