"""trainer.pure.sources: what data.path names, which files hold its splits, how many rows
they hold (Parquet from its footer), all without the heavy libraries."""

import json
import subprocess
import sys

import pytest
from data_files import write_parquet
from trainer_helpers import REPO

from trainer.pure.builtin_names import DEMO_DATA, DEMO_DATA_DIR
from trainer.pure.config import config_from_dict
from trainer.pure.parquet_footer import FooterError, parquet_num_rows
from trainer.pure.sources import (
    SourceError,
    SourceKind,
    count_rows,
    file_format,
    held_out_count,
    resolve_source,
    split_files,
    valid_split_names,
)


def data_cfg(path, **extra):
    return config_from_dict({"data": {"path": str(path), **extra}}, "test").data


# ---------------------------------------------------------------- the Parquet footer


@pytest.mark.parametrize("rows", [0, 1, 7, 1000])
def test_footer_row_count_of_plain_tables(tmp_path, rows):
    f = write_parquet(tmp_path / "t.parquet", {"prompt": [f"p{i}" for i in range(rows)], "score": list(range(rows))})
    assert parquet_num_rows(f) == rows


def test_footer_of_many_row_groups_wide_and_nested_columns(tmp_path):
    import pyarrow.parquet as pq

    n = 2500
    messages = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}] for i in range(n)]
    columns = {f"c{k}": [float(i) for i in range(n)] for k in range(20)}  # > 14 schema elements
    columns.update(
        chosen=messages,
        flag=[i % 2 == 0 for i in range(n)],
        tags=[{"k": i} for i in range(n)],
        ids=[list(range(i % 5)) for i in range(n)],
    )
    f = write_parquet(tmp_path / "wide.parquet", columns, row_group_size=300, compression="zstd")
    assert pq.read_metadata(str(f)).num_row_groups > 5
    assert parquet_num_rows(f) == n == pq.read_metadata(str(f)).num_rows


def test_footer_of_a_map_column_and_key_value_metadata(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"m": pa.array([[("a", 1)], [("b", 2), ("c", 3)], []], type=pa.map_(pa.string(), pa.int64()))})
    table = table.replace_schema_metadata({"origin": "test", "huggingface": json.dumps({"x": 1})})
    pq.write_table(table, str(tmp_path / "m.parquet"), write_statistics=True)
    assert parquet_num_rows(tmp_path / "m.parquet") == 3


def test_footer_of_a_file_written_by_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"prompt": f"Q{i}", "chosen": "yes", "rejected": "no"} for i in range(123)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    assert parquet_num_rows(tmp_path / "train.parquet") == 123


def test_footer_field_header_in_long_form(tmp_path):
    # Writers may give a field id in full (delta nibble 0) instead of as a delta: i64 field 3
    # (zigzag 6), then 42 (zigzag 84), then the end of the struct.
    metadata = b"\x06\x06\x54\x00"
    f = tmp_path / "long.parquet"
    f.write_bytes(b"PAR1" + metadata + len(metadata).to_bytes(4, "little") + b"PAR1")
    assert parquet_num_rows(f) == 42


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "too short"),
        (b'{"prompt": "p"}\n' * 4, "no PAR1 footer"),
        (b"PAR1" + b"\x00" * 8 + b"\xff\xff\x00\x00PAR1", "points outside the file"),
        (b"PAR1" + b"\x15\x02" + b"\x02\x00\x00\x00PAR1", "truncated"),
        (b"PAR1" + b"\x15\x02\x00" + b"\x03\x00\x00\x00PAR1", "no row count"),
        (b"PAR1" + b"\x00" * 8 + b"\x04\x00\x00\x00PARE", "encrypted"),
    ],
)
def test_footer_errors_say_why(tmp_path, content, why):
    f = tmp_path / "bad.parquet"
    f.write_bytes(content)
    with pytest.raises(FooterError, match=why):
        parquet_num_rows(f)
    with pytest.raises(SourceError) as err:
        count_rows(f)
    assert str(err.value).startswith(f"{f}: not a readable Parquet file") and "\n" not in str(err.value)


def test_truncated_real_footer_is_refused(tmp_path):
    f = write_parquet(tmp_path / "t.parquet", {"x": list(range(10))})
    data = f.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    # Keep the metadata's first bytes only (inside the schema, before the row count) behind a
    # consistent trailer: the reader runs off the end.
    kept = data[-8 - length : -8 - length + 12]
    f.write_bytes(data[: -8 - length] + kept + len(kept).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(FooterError):
        parquet_num_rows(f)


# ---------------------------------------------------------------- what data.path names


def test_resolve_source_kinds(tmp_path):
    (tmp_path / "pairs.jsonl").write_text("{}\n")
    assert resolve_source(DEMO_DATA).kind is SourceKind.BUILTIN
    assert resolve_source(DEMO_DATA).path == DEMO_DATA_DIR
    assert resolve_source(str(tmp_path)).kind is SourceKind.FOLDER
    assert resolve_source(str(tmp_path / "pairs.jsonl")).kind is SourceKind.FILE
    hub = resolve_source("someorg/prefs")
    assert hub.kind is SourceKind.HUB and hub.path is None


@pytest.mark.parametrize("spec", ["./nope", "/nope/at/all", "~/nope-orpo-tui", "nope.jsonl", "a/b/c", "plain"])
def test_missing_local_paths_are_not_hub_ids(spec):
    with pytest.raises(SourceError, match=r"^data.path: .*: no such file or folder$"):
        resolve_source(spec)


def test_unknown_builtin():
    with pytest.raises(SourceError, match=r"^data.path: unknown builtin dataset 'builtin:nope' \(known: builtin:demo\)$"):
        resolve_source("builtin:nope")


def test_split_files_extension_order_and_validation_names(tmp_path):
    for name in ("train.parquet", "train.json", "test.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text("")
    files = split_files(resolve_source(str(tmp_path)), data_cfg(tmp_path))
    assert files.train.name == "train.json"  # .jsonl, then .json, then .parquet
    assert files.valid.name == "test.jsonl"  # valid, validation, test, eval
    (tmp_path / "validation.parquet").write_text("")
    assert split_files(resolve_source(str(tmp_path)), data_cfg(tmp_path)).valid.name == "validation.parquet"
    # A split named on purpose is the only one looked for.
    assert split_files(resolve_source(str(tmp_path)), data_cfg(tmp_path, valid_split="dev")).valid is None
    assert split_files(resolve_source(str(tmp_path)), data_cfg(tmp_path, valid_split="")).valid is None


def test_folder_without_train_split(tmp_path):
    (tmp_path / "valid.jsonl").write_text("")
    with pytest.raises(SourceError) as err:
        split_files(resolve_source(str(tmp_path)), data_cfg(tmp_path, train_split="dev"))
    assert str(err.value) == f"{tmp_path}: no dev.jsonl, .json or .parquet file in this folder"


def test_valid_split_names():
    assert valid_split_names("valid") == ("valid", "validation", "test", "eval")
    assert valid_split_names("dev") == ("dev",)
    assert valid_split_names("") == ()


def test_file_format(tmp_path):
    assert [file_format(tmp_path / n) for n in ("a.jsonl", "b.JSON", "c.parquet")] == ["jsonl", "json", "parquet"]
    with pytest.raises(SourceError, match=r"a.csv: unsupported file type \(use .jsonl, .json or .parquet\)$"):
        file_format(tmp_path / "a.csv")


@pytest.mark.parametrize(
    "rows, fraction, held",
    [(20, 0.1, 2), (20, 0.0, 0), (1, 0.5, 0), (2, 0.5, 1), (3, 0.01, 1), (25, 0.05, 1), (30, 0.05, 2), (1000, 0.05, 50)],
)
def test_held_out_count(rows, fraction, held):
    assert held_out_count(rows, fraction) == held


# ---------------------------------------------------------------- counting rows of one file


def test_count_rows_jsonl_skips_blank_lines(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"a": 1}\n\n  \n{"a": 2}\r\n{"a": 3}')
    assert count_rows(f) == 3


def test_count_rows_json_array_and_json_lines(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([{"a": i} for i in range(5)], indent=2))
    assert count_rows(f) == 5
    f.write_bytes(b"\xef\xbb\xbf" + b"  \n" + json.dumps([{"a": 1}, {"a": 2}]).encode())
    assert count_rows(f) == 2
    f.write_text('{"a": 1}\n{"a": 2}\n')  # JSON Lines in a .json file, as the loader reads it
    assert count_rows(f) == 2
    f.write_text('[{"a": 1}, ')
    with pytest.raises(SourceError, match=r"a.json: not valid JSON \("):
        count_rows(f)


def test_sources_and_counting_load_no_heavy_library():
    heavy = ("numpy", "pyarrow", "pandas", "datasets", "mlx", "mlx_lm", "textual")
    code = (
        "import json, sys\n"
        "import trainer.pure.sources, tui.derived\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
