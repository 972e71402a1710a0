"""Turning library exceptions into the one-line messages the CLI prints. Pure."""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def hub_offline() -> bool:
    """Whether the Hugging Face libraries were told not to reach the hub (any of their
    switches), so a failed load can say "offline and not cached" instead of an HTTP error."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def describe(exc: BaseException) -> str:
    """`Type: first line` for an unexpected error, so the user knows what kind it was."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
