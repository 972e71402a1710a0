"""Writing small data files in the formats the trainer reads, for the data-source tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def data_cfg(path: Path, **extra):
    """The data section of a config reading ``path``, with ``extra`` data keys."""
    from trainer.pure.config import config_from_dict

    return config_from_dict({"data": {"path": str(path), **extra}}, "test").data


def assert_rows_refused(path: Path, rows: list, message: str) -> None:
    """Loading ``rows`` fails with one line naming the file and holding ``message``."""
    from trainer.data import DataError, load_splits

    f = write_jsonl(path, rows)
    with pytest.raises(DataError) as err:
        load_splits(data_cfg(f), seed=0)
    text = str(err.value)
    assert message in text and str(f) in text and "\n" not in text


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, columns: dict, **options) -> Path:
    """A Parquet file written by pyarrow (what `datasets` uses), one column per key."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), str(path), **options)
    return path
