"""Where ``data.path`` points, and which files hold its splits: one answer for the trainer,
which loads them, and for the app, which counts their rows to show the implied epochs.

``data.path`` is a ``builtin:`` name, a local folder holding ``<split>.jsonl|.json|.parquet``
files, a single local file (validation is then held out of it), or a hub dataset id. Rows
are counted here without numpy, pyarrow or datasets, which the app must not import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from trainer.pure.builtin_names import is_builtin, resolve_builtin_data
from trainer.pure.config_schema import DataConfig
from trainer.pure.parquet_footer import FooterError, parquet_num_rows

# In the order a folder's split file is looked for: the first that exists is used.
EXTENSIONS = (".jsonl", ".json", ".parquet")
# Tried, in order, when data.valid_split keeps its default: published datasets call their
# validation split any of these.
VALID_FALLBACKS = ("valid", "validation", "test", "eval")
_DEFAULT_VALID_SPLIT = DataConfig().valid_split
_BOM = b"\xef\xbb\xbf"


class SourceError(Exception):
    """``data.path`` or one of its files is unusable, said in one line naming it."""


class SourceKind(Enum):
    BUILTIN = "builtin"
    FOLDER = "folder"
    FILE = "file"
    HUB = "hub"


@dataclass(frozen=True)
class Source:
    """What ``data.path`` names. ``path`` is the folder (builtin or local) or the file;
    None for a hub dataset id."""

    kind: SourceKind
    spec: str
    path: Path | None = None


@dataclass(frozen=True)
class SplitFiles:
    """The files of a local source. Without ``valid``, validation rows are held out of the
    train file (``held_out_count``)."""

    train: Path
    valid: Path | None


def resolve_source(spec: str) -> Source:
    """Which kind of source ``data.path`` names. A spec that is not on disk is a hub id
    unless it looks like a path (``./x``, ``/x``, ``~/x``, ``x.jsonl``, ``a/b/c``)."""
    if is_builtin(spec):
        try:
            folder = resolve_builtin_data(spec)
        except ValueError as exc:
            raise SourceError(f"data.path: {exc}") from None
        if not folder.is_dir():
            raise SourceError(f"data.path: {spec}: no such file or folder")
        return Source(SourceKind.BUILTIN, spec, folder)
    path = Path(spec).expanduser()
    if path.is_dir():
        return Source(SourceKind.FOLDER, spec, path)
    if path.is_file():
        return Source(SourceKind.FILE, spec, path)
    if looks_local(spec):
        raise SourceError(f"data.path: {spec}: no such file or folder")
    return Source(SourceKind.HUB, spec)


def looks_local(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(EXTENSIONS) or spec.count("/") != 1


def valid_split_names(valid_split: str) -> tuple[str, ...]:
    """The split names that count as validation, in the order they are looked for: the
    configured one, and the usual alternatives when it was left at its default."""
    if not valid_split:
        return ()
    if valid_split == _DEFAULT_VALID_SPLIT:
        return VALID_FALLBACKS
    return (valid_split,)


def split_file(folder: Path, split: str) -> Path | None:
    """The file holding ``split`` in ``folder``, or None."""
    for ext in EXTENSIONS:
        candidate = folder / f"{split}{ext}"
        if candidate.is_file():
            return candidate
    return None


def split_files(source: Source, data: DataConfig) -> SplitFiles:
    """The train and validation files of a local source."""
    if source.kind is SourceKind.HUB or source.path is None:
        raise ValueError(f"{source.spec} is a hub dataset: it has no local files")
    if source.kind is SourceKind.FILE:
        return SplitFiles(source.path, None)
    train = split_file(source.path, data.train_split)
    if train is None:
        names = _alternatives([data.train_split + EXTENSIONS[0], *EXTENSIONS[1:]])
        raise SourceError(f"{source.path}: no {names} file in this folder")
    found = (split_file(source.path, name) for name in valid_split_names(data.valid_split))
    return SplitFiles(train, next((f for f in found if f is not None), None))


def file_format(path: Path) -> str:
    """``jsonl``, ``json`` or ``parquet``, from the file's extension."""
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise SourceError(f"{path}: unsupported file type (use {_alternatives(EXTENSIONS)})")
    return suffix[1:]


def _alternatives(items) -> str:
    """``a, b or c``."""
    items = list(items)
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


def held_out_count(rows: int, fraction: float) -> int:
    """How many of a train split's ``rows`` are held out for validation when the source has
    no validation split: at least one, but none of a split too small to lose one."""
    if fraction <= 0 or rows < 2:
        return 0
    return max(1, int(round(rows * fraction)))


def count_rows(path: Path) -> int:
    """The rows in one data file, as the loader would read them, without parsing every row:
    JSON Lines by non-blank lines, a JSON array by its length, Parquet from its footer."""
    kind = file_format(path)
    if kind == "parquet":
        try:
            return parquet_num_rows(path)
        except FooterError as exc:
            raise SourceError(f"{path}: not a readable Parquet file: {exc}") from None
    # The loader reads a .json file that is not an array as JSON Lines, like a .jsonl.
    if kind == "json" and _starts_an_array(path):
        try:
            rows = json.loads(path.read_bytes())
        except ValueError as exc:
            raise SourceError(f"{path}: not valid JSON ({getattr(exc, 'msg', 'not UTF-8')})") from None
        return len(rows)
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _starts_an_array(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    return head.lstrip().startswith(b"[")


def train_row_count(data: DataConfig) -> int | None:
    """The rows training will see, after any hold-out, counted without loading the data;
    None for a hub dataset, whose size is known only once it is loaded."""
    source = resolve_source(data.path)
    if source.kind is SourceKind.HUB:
        return None
    files = split_files(source, data)
    rows = count_rows(files.train)
    return rows if files.valid else rows - held_out_count(rows, data.valid_fraction)
