"""Data loading, validation, tokenization and batching."""

import json

import pytest
from data_files import assert_rows_refused, data_cfg, write_jsonl

from trainer.data import DataError, Pair, batch_at, collate, load_splits, make_batches, tokenize_rows

ROWS = [{"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"BAD {i}", "extra": i} for i in range(20)]


@pytest.fixture(scope="module")
def tokenizer():
    from mlx_lm.utils import load_tokenizer

    from trainer.builtin import resolve_builtin_model

    return load_tokenizer(resolve_builtin_model("builtin:tiny"))


def test_folder_with_train_and_valid(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "valid.jsonl", ROWS[:3])
    splits = load_splits(data_cfg(tmp_path), seed=0)
    assert len(splits.train) == 20 and len(splits.valid) == 3
    assert splits.train[0].prompt == "Question 0?" and splits.train[0].score == 1.0


def test_validation_fallback_names_and_parquet(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "train.parquet"))
    write_jsonl(tmp_path / "validation.jsonl", ROWS[:2])
    splits = load_splits(data_cfg(tmp_path), seed=0)
    assert len(splits.train) == 20 and len(splits.valid) == 2


def test_single_file_holds_out_a_deterministic_valid_split(tmp_path):
    f = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    a = load_splits(data_cfg(f, valid_fraction=0.1), seed=3)
    b = load_splits(data_cfg(f, valid_fraction=0.1), seed=3)
    assert len(a.valid) == 2 and len(a.train) == 18
    assert [r.chosen for r in a.valid] == [r.chosen for r in b.valid]
    assert "held out 2 of 20" in a.notes[0]


def test_column_overrides_and_flat_rows(tmp_path):
    rows = [{"good": f"yes {i}", "bad": f"no {i}"} for i in range(5)]
    f = write_jsonl(tmp_path / "flat.jsonl", rows)
    splits = load_splits(data_cfg(f, chosen_feature="good", rejected_feature="bad", valid_fraction=0.0), seed=0)
    assert splits.train[0].prompt is None and splits.train[0].chosen == "yes 0"
    assert splits.valid == []


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "p", "chosen": "c"}], "no 'rejected' column"),
        ([{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "", "rejected": "r"}], "row 2: 'chosen' is empty"),
        ([{"prompt": "p", "chosen": "c", "rejected": "r", "preference_score": "high"}],
         "row 1: 'preference_score' must be a finite float32 number"),
    ],
)
def test_bad_rows_name_the_file_and_row(tmp_path, rows, message):
    assert_rows_refused(tmp_path / "bad.jsonl", rows, message)


def test_malformed_jsonl_line_is_named(tmp_path):
    f = tmp_path / "broken.jsonl"
    f.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "p", "chosen": \n')
    with pytest.raises(DataError, match=r"broken.jsonl: row 2: not valid JSON"):
        load_splits(data_cfg(f), seed=0)


def test_missing_path_and_unknown_builtin(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_splits(data_cfg(tmp_path / "nope.jsonl"), seed=0)
    with pytest.raises(DataError, match="builtin"):
        load_splits(data_cfg("builtin:nothing"), seed=0)


def test_builtin_demo_loads():
    splits = load_splits(data_cfg("builtin:demo"), seed=0)
    assert len(splits.train) >= 300 and len(splits.valid) >= 50
    assert all(r.prompt for r in splits.train)


def test_prompt_is_masked_and_boundary_exact(tokenizer):
    splits_rows = [r for r in load_splits(data_cfg("builtin:demo"), seed=0).train[:4]]
    pairs, stats = tokenize_rows(splits_rows, tokenizer, max_seq_length=512)
    assert stats.truncated == 0
    p = pairs[0]
    assert list(p.prompt) == tokenizer.encode(splits_rows[0].prompt)
    assert p.chosen[-1] == tokenizer.eos_token_id
    b = collate(pairs, pad_id=0)
    row = 0
    scored = [int(t) for t, m in zip(b["targets"][row], b["mask"][row]) if m]
    assert scored == list(p.chosen)  # exactly the completion tokens, nothing of the prompt
    rej = len(pairs)
    scored_r = [int(t) for t, m in zip(b["targets"][rej], b["mask"][rej]) if m]
    assert scored_r == list(p.rejected)
    assert b["inputs"].shape[1] % 16 == 0


def test_truncation_is_counted_and_keeps_completion(tokenizer):
    rows = load_splits(data_cfg("builtin:demo"), seed=0).train[:8]
    pairs, stats = tokenize_rows(rows, tokenizer, max_seq_length=12)
    assert stats.truncated == 8
    for p in pairs:
        assert len(p.prompt) + max(len(p.chosen), len(p.rejected)) <= 12
        assert len(p.chosen) >= 1


def test_batches_are_length_grouped_and_order_is_reproducible():
    pairs = [Pair((1,) * n, (2,), (3,), 1.0) for n in [5, 1, 9, 3, 7, 2, 8, 4]]
    batches = make_batches(pairs, 2)
    for b in batches:
        lengths = sorted(pairs[i].length for i in b)
        assert lengths[-1] - lengths[0] <= 2
    seq = [batch_at(batches, 7, k) for k in range(12)]
    assert seq == [batch_at(batches, 7, k) for k in range(12)]
    assert sorted(seq[:4]) == sorted(batches)  # one epoch visits every batch once
    assert seq[:4] != [batch_at(batches, 8, k) for k in range(4)]


def test_unusable_files_and_folders_are_named(tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text("prompt,chosen,rejected\n")
    with pytest.raises(DataError, match=r"pairs.csv: unsupported file type \(use .jsonl, .json or .parquet\)$"):
        load_splits(data_cfg(f), seed=0)
    write_jsonl(tmp_path / "valid.jsonl", ROWS[:2])
    with pytest.raises(DataError) as err:
        load_splits(data_cfg(tmp_path), seed=0)
    assert str(err.value) == f"{tmp_path}: no train.jsonl, .json or .parquet file in this folder"


def test_a_named_validation_split_is_the_only_one_used(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "validation.jsonl", ROWS[:3])
    splits = load_splits(data_cfg(tmp_path, valid_split="dev", valid_fraction=0.1), seed=0)
    assert splits.valid_held_out and len(splits.valid) == 2 and len(splits.train) == 18
