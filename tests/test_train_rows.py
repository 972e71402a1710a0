"""The form's train row count (tui.derived) for every kind of data source, and that it is the
number of rows trainer/data.py really trains on."""

import json

import pytest
from data_files import write_jsonl, write_parquet

from trainer.data import load_splits
from trainer.pure.config import config_from_dict
from tui.derived import count_train_rows, derived_values

ROWS = [{"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"BAD {i}"} for i in range(30)]


def cfg_for(path, **data):
    return config_from_dict({"data": {"path": str(path), **data}}, "test")


def jsonl_folder(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "valid.jsonl", ROWS[:4])
    return cfg_for(tmp_path)


def validation_named_folder(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:25])
    write_jsonl(tmp_path / "validation.jsonl", ROWS[:3])
    return cfg_for(tmp_path)


def parquet_folder(tmp_path):
    columns = {k: [r[k] for r in ROWS[:27]] for k in ROWS[0]}
    write_parquet(tmp_path / "train.parquet", columns, row_group_size=10)
    write_parquet(tmp_path / "test.parquet", {k: v[:2] for k, v in columns.items()})
    return cfg_for(tmp_path)


def parquet_folder_without_validation(tmp_path):
    write_parquet(tmp_path / "train.parquet", {k: [r[k] for r in ROWS] for k in ROWS[0]})
    return cfg_for(tmp_path, valid_fraction=0.1)


def single_jsonl(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n\n" for r in ROWS))  # blank lines are not rows
    return cfg_for(f, valid_fraction=0.2)


def json_array(tmp_path):
    f = tmp_path / "pairs.json"
    f.write_text(json.dumps(ROWS[:21], indent=2))
    return cfg_for(f, valid_fraction=0.05)


def json_array_folder_named_split(tmp_path):
    (tmp_path / "dev.json").write_text(json.dumps(ROWS[:5]))
    (tmp_path / "mine.json").write_text(json.dumps(ROWS[:17]))
    return cfg_for(tmp_path, train_split="mine", valid_split="dev")


SOURCES = {
    "jsonl folder": (jsonl_folder, 30),
    "validation split name": (validation_named_folder, 25),
    "parquet folder": (parquet_folder, 27),
    "parquet folder, held out": (parquet_folder_without_validation, 27),
    "single jsonl, valid_fraction": (single_jsonl, 24),
    "json array": (json_array, 20),
    "json folder, named splits": (json_array_folder_named_split, 17),
}


@pytest.mark.parametrize("name", SOURCES)
def test_derived_train_rows(tmp_path, name):
    make, rows = SOURCES[name]
    assert count_train_rows(make(tmp_path)) == rows


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """`datasets` caches what it reads under HF_HOME; keep that cache in the test's folder.
    The library read HF_HOME when first imported, so its resolved cache folder moves too."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    return tmp_path / "hf"


@pytest.mark.parametrize("name", SOURCES)
def test_trainer_and_app_agree_on_train_rows(tmp_path, hf_home, name):
    make, _ = SOURCES[name]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cfg = make(data_dir)
    splits = load_splits(cfg.data, cfg.training.seed)
    assert count_train_rows(cfg) == len(splits.train)
    assert (hf_home / "datasets").is_dir()  # the loader really ran, with its cache here


def test_builtin_demo_agrees_with_the_trainer():
    cfg = config_from_dict({}, "test")
    assert count_train_rows(cfg) == len(load_splits(cfg.data, 0).train) > 0


def test_hub_id_has_no_offline_count_and_the_form_says_so():
    cfg = cfg_for("someorg/preference-pairs")
    assert count_train_rows(cfg) is None
    epochs = dict(derived_values(cfg, count_train_rows(cfg)))["Implied epochs"]
    assert epochs.startswith("? (") and "run the data check to count rows" in epochs


@pytest.mark.parametrize("spec", ["./missing-folder", "builtin:nope"])
def test_unusable_paths_count_nothing(spec):
    assert count_train_rows(cfg_for(spec)) is None


def test_unreadable_files_count_nothing(tmp_path):
    (tmp_path / "train.parquet").write_text("not parquet")
    assert count_train_rows(cfg_for(tmp_path)) is None
    (tmp_path / "pairs.csv").write_text("a,b\n")
    assert count_train_rows(cfg_for(tmp_path / "pairs.csv")) is None
