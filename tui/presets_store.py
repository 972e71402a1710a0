"""Preset files on disk: scanning, saving only what changed, and file operations.

Pure Python on top of `trainer.pure.config`: no Textual here, so every rule about files is
testable without a screen.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import tomlkit
from tomlkit.exceptions import TOMLKitError

from trainer.pure.config import Config, ConfigError, config_from_dict, get_value, iter_fields, parse_preset_text, read_preset_text
from trainer.pure.runs import atomic_write_text
from trainer.pure.trainer_process import PROG, TRAINER, train_argv


@dataclass(frozen=True)
class PresetEntry:
    """One preset file: its config when it parses, or the one-line error when it does not."""

    path: Path
    config: Config | None
    raw: dict | None
    error: str | None
    text: str | None = None  # the file as it was read, to notice a change made elsewhere

    @property
    def name(self) -> str:
        return self.path.stem

    def summary(self) -> dict[str, str]:
        if self.config is None:
            return {"model": "", "data": "", "type": "", "beta": "", "description": "⚠ does not load (details below)"}
        c = self.config
        return {
            "model": c.model.path,
            "data": c.data.path,
            "type": c.finetune.type + (f" q{c.model.quantize.bits}" if c.model.quantize.bits else ""),
            "beta": f"{c.orpo.beta:g}",
            "description": c.description,
        }

    @property
    def problem(self) -> str:
        """The error without the file name the list already shows."""
        return (self.error or "").removeprefix(f"{self.path}: ")

    def matches(self, query: str) -> bool:
        """Every word of the query appears somewhere in the name or the summary."""
        haystack = " ".join([self.name, *self.summary().values()]).lower()
        return all(word in haystack for word in query.lower().split())


def load_entry(path: Path) -> PresetEntry:
    """Read the file once: the raw table (for minimal saves) and the config come together."""
    try:
        text = read_preset_text(path)
        raw, config = parse_preset_text(text, str(path))
    except ConfigError as exc:
        return PresetEntry(path, None, None, str(exc))
    return PresetEntry(path, config, raw, None, text)


def changed_on_disk(entry: PresetEntry) -> bool:
    """Whether the file is no longer what the entry read (another editor or app saved it)."""
    try:
        return read_preset_text(entry.path) != entry.text
    except ConfigError:
        return True


def scan_presets(folder: Path) -> list[PresetEntry]:
    if not folder.is_dir():
        return []
    return [load_entry(p) for p in sorted(folder.glob("*.toml"), key=lambda p: p.name.lower())]


# ---------------------------------------------------------------------------- saving


def changed_paths(before: Config, after: Config) -> list[str]:
    return [f.path for f in iter_fields() if get_value(before, f.path) != get_value(after, f.path)]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def merge_changes(raw: dict, before: Config, after: Config) -> dict:
    """The raw TOML table with only the changed keys rewritten: keys the user never wrote
    stay absent, so a saved preset still reads like the one they wrote."""
    merged = _deep_copy(raw)
    for path in changed_paths(before, after):
        *tables, key = path.split(".")
        node = merged
        for table in tables:
            node = node.setdefault(table, {})
        node[key] = _plain(get_value(after, path))
    return merged


def _deep_copy(raw: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def _leading_comments(path: Path) -> str:
    """tomli-w cannot keep comments; keep at least the header block that describes a preset."""
    if not path.exists():
        return ""
    lines = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def edit_text(text: str, before: Config, after: Config) -> str:
    """The preset's text with only the keys changed from `before` to `after` rewritten:
    comments anywhere, blank lines, key order and how the other numbers are spelled
    (`1e-3` stays `1e-3`) are the user's, so a saved preset diffs as one line per edit."""
    doc = tomlkit.parse(text)
    for path in changed_paths(before, after):
        *tables, key = path.split(".")
        node = doc
        for i, table in enumerate(tables):
            if table not in node:
                # An outer table that only holds another one is written as its header alone.
                node[table] = tomlkit.table(is_super_table=i < len(tables) - 1)
            node = node[table]
        node[key] = _plain(get_value(after, path))
    return tomlkit.dumps(doc)


def write_text(path: Path, text: str) -> None:
    """Write a preset's text atomically, through a symbolic link (see `write_raw`), once it
    is known to load back."""
    parse_preset_text(text, str(path))
    target = Path(os.path.realpath(path))
    with _file_errors(path):
        atomic_write_text(target, text)


def write_raw(path: Path, raw: dict, keep_header_from: Path | None = None) -> None:
    """Write a preset atomically. A preset that is a symbolic link is written through to the
    file it points at (replacing the link with a copy would silently fork the preset).
    Raises PresetFileError, in one line, when the folder is read-only or full."""
    # Refuse to write what would not load back: a saved preset must always open.
    config_from_dict(raw, str(path))
    header = _leading_comments(keep_header_from or path)
    target = Path(os.path.realpath(path))
    with _file_errors(path):
        atomic_write_text(target, header + tomli_w.dumps(raw))


def save_changes(entry: PresetEntry, after: Config, target: Path | None = None) -> Path:
    """Save `after` over the entry's file (or to `target`, for save-as), changing only the
    keys the user changed since the entry was read. They are merged into the file as it is
    *now*: a key someone else changed and saved in the meantime keeps their value unless
    this user changed it too, so one editor's save never silently reverts another's."""
    assert entry.config is not None and entry.raw is not None
    target = target or entry.path
    current = load_entry(entry.path) if entry.path.exists() else entry
    if current.raw is None:
        raise PresetFileError(f"{entry.path.name} was changed elsewhere and no longer loads ({current.problem}); "
                              "save as another name")
    try:
        text = edit_text(current.text or "", entry.config, after)
    except (TOMLKitError, ValueError, TypeError):
        # TOML that tomllib reads but tomlkit cannot edit: rewrite the table instead, which
        # keeps the values and the header comments but not the rest of the layout.
        write_raw(target, merge_changes(current.raw, entry.config, after), keep_header_from=entry.path)
    else:
        write_text(target, text)
    return target


# ---------------------------------------------------------------------------- file operations


class PresetFileError(Exception):
    """A file operation that cannot be done, in one line."""


@contextlib.contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    """OS errors (read-only folder, full disk, a name too long) as one-line PresetFileErrors."""
    try:
        yield
    except OSError as exc:
        raise PresetFileError(f"{exc.filename or path}: {exc.strerror or exc}") from None


# Most file systems allow 255 bytes per name; keep room for ".toml" and temporary prefixes.
MAX_NAME_BYTES = 200


def preset_path(folder: Path, name: str) -> Path:
    name = name.strip()
    if name.endswith(".toml"):
        name = name[:-5]
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise PresetFileError(f"'{name}' is not a usable preset name")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise PresetFileError(f"a preset name of {len(name)} characters is too long (at most {MAX_NAME_BYTES} bytes)")
    return folder / f"{name}.toml"


def _free(path: Path) -> Path:
    if path.exists():
        raise PresetFileError(f"{path.name} already exists")
    return path


def clone(entry: PresetEntry, new_name: str) -> Path:
    target = _free(preset_path(entry.path.parent, new_name))
    with _file_errors(target):
        shutil.copyfile(entry.path, target)
    return target


def rename(entry: PresetEntry, new_name: str) -> Path:
    target = _free(preset_path(entry.path.parent, new_name))
    with _file_errors(target):
        entry.path.rename(target)
    return target


def create(folder: Path, name: str, description: str = "") -> Path:
    target = _free(preset_path(folder, name))
    with _file_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    write_raw(target, {"description": description} if description else {})
    return target


def train_command(path: Path, runs_dir: Path) -> str:
    """The shell command that trains this preset into `runs_dir` (the app's runs folder) as
    the app's own start does (the same arguments, run in the foreground), quoted for copy
    and paste. Every place that shows the command calls this, so they all agree."""
    args = train_argv(path, runs_dir, log_only=False)[len(TRAINER):]
    return shlex.join([PROG, *args])
