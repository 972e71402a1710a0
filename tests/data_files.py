"""Writing small data files in the formats the trainer reads, for the data-source tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, columns: dict, **options) -> Path:
    """A Parquet file written by pyarrow (what `datasets` uses), one column per key."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), str(path), **options)
    return path
