"""A run's notes and tags, kept in its folder (notes.md, tags.json) so they travel with it
and every app opened on the same runs folder sees them."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import atomic_write_json, atomic_write_text


def read_notes(run_dir: Path) -> str:
    """The notes as text; bytes that are not UTF-8 (a file written by another tool) show as
    U+FFFD instead of making the run unreadable."""
    try:
        return RunFolder(run_dir).notes.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def write_notes(run_dir: Path, text: str) -> None:
    atomic_write_text(RunFolder(run_dir).notes, text)


def read_tags(run_dir: Path) -> list[str]:
    try:
        tags = json.loads(RunFolder(run_dir).tags.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def parse_tags(text: str) -> list[str]:
    """Comma- or space-separated tags, deduplicated in order."""
    seen: list[str] = []
    for tag in text.replace(",", " ").split():
        if tag not in seen:
            seen.append(tag)
    return seen


def write_tags(run_dir: Path, tags: list[str]) -> None:
    atomic_write_json(RunFolder(run_dir).tags, tags)


def first_line(notes: str) -> str:
    return next((line.strip("# ").strip() for line in notes.splitlines() if line.strip()), "")
