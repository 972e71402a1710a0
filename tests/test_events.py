import json
import math
import os

import pytest

from trainer.pure.events import (
    EVENT_TYPES,
    MetricsTail,
    MetricsWriter,
    last_step,
    read_events,
)
from trainer.pure.metrics import ORPO_METRICS, RATE_METRICS


def test_constants():
    assert EVENT_TYPES == ("train", "val", "checkpoint", "sample", "status")
    assert "rewards/margins" in ORPO_METRICS and "log_odds_chosen" in ORPO_METRICS
    assert len(ORPO_METRICS) == 10
    assert RATE_METRICS == ("learning_rate", "tokens_per_second", "pairs_per_second", "peak_memory_gb",
                            "active_memory_gb", "cache_memory_gb", "rss_gb")


def test_writer_line_schema_and_flush(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.write("train", 1, loss=1.5, **{"rewards/chosen": -0.25})
        # Visible to another reader before close: flushed per line.
        lines = path.read_text().splitlines()
        assert len(lines) == 1
        record = json.loads(lines[0])
        assert record["v"] == 1 and record["event"] == "train" and record["step"] == 1
        assert isinstance(record["time"], float)
        assert record["loss"] == 1.5 and record["rewards/chosen"] == -0.25
    assert w.closed


def test_writer_appends(tmp_path):
    path = tmp_path / "m.jsonl"
    with MetricsWriter(path) as w:
        w.write("train", 1, loss=1.0)
    with MetricsWriter(path) as w:
        w.write("train", 2, loss=0.5)
    assert [e["step"] for e in read_events(path)] == [1, 2]


def test_writer_rejects_bad_event_and_reserved_names(tmp_path):
    with MetricsWriter(tmp_path / "m.jsonl") as w:
        with pytest.raises(ValueError):
            w.write("bogus", 1)
        with pytest.raises(ValueError):
            w.write("train", 1, v=2)


def test_writer_converts_scalar_objects(tmp_path):
    class Scalar:  # stands in for numpy / mlx scalars
        def item(self):
            return 0.5

    path = tmp_path / "m.jsonl"
    with MetricsWriter(path) as w:
        w.write("val", 3, loss=Scalar(), time=123.0)
    (event,) = read_events(path)
    assert event["loss"] == 0.5 and event["time"] == 123.0


def test_nan_and_inf_round_trip(tmp_path):
    path = tmp_path / "m.jsonl"
    with MetricsWriter(path) as w:
        w.write("train", 1, loss=float("nan"), nll_loss=float("inf"), log_odds_ratio=float("-inf"), extra=[1.0, float("nan")])
        w.write("sample", 1, text="nan", loss=float("nan"))
    raw = path.read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    for line in raw.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    train, sample = read_events(path)
    assert math.isnan(train["loss"])
    assert train["nll_loss"] == math.inf and train["log_odds_ratio"] == -math.inf
    assert train["extra"][0] == 1.0 and math.isnan(train["extra"][1])
    assert train["event"] == "train"
    # Generated text in sample events is left alone; their metrics are decoded.
    assert sample["text"] == "nan" and math.isnan(sample["loss"])


def test_tail_missing_file_then_incremental(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []
    w = MetricsWriter(path)
    w.write("train", 1, loss=1.0)
    w.write("train", 2, loss=0.9)
    assert [e["step"] for e in tail.read_new()] == [1, 2]
    assert tail.read_new() == []
    w.write("val", 2, loss=0.8)
    new = tail.read_new()
    assert [(e["event"], e["step"]) for e in new] == [("val", 2)]
    assert tail.offset == os.path.getsize(path)
    w.close()


def test_tail_partial_line_waits_for_newline(tmp_path):
    path = tmp_path / "m.jsonl"
    full = json.dumps({"v": 1, "event": "train", "step": 7, "time": 1.0, "loss": 2.0})
    with open(path, "w") as f:
        f.write(json.dumps({"v": 1, "event": "train", "step": 6, "time": 1.0}) + "\n")
        f.write(full[:10])
    tail = MetricsTail(path)
    assert [e["step"] for e in tail.read_new()] == [6]
    assert tail.read_new() == []
    with open(path, "a") as f:
        f.write(full[10:20])
    assert tail.read_new() == []
    with open(path, "a") as f:
        f.write(full[20:] + "\n")
    (event,) = tail.read_new()
    assert event["step"] == 7 and event["loss"] == 2.0
    assert tail.skipped == 0


def test_tail_skips_garbage(tmp_path):
    path = tmp_path / "m.jsonl"
    good = json.dumps({"v": 1, "event": "train", "step": 1, "time": 1.0})
    path.write_bytes(
        b"not json\n" + good.encode() + b"\n[1, 2]\n\n\xff\xfe\n" + b'{"v": 1, "event": "val", "step": 2}\n'
    )
    tail = MetricsTail(path)
    events = tail.read_new()
    assert [e["step"] for e in events] == [1, 2]
    assert tail.skipped == 3


def test_tail_restarts_after_truncation_or_replacement(tmp_path):
    path = tmp_path / "m.jsonl"
    with MetricsWriter(path) as w:
        for step in range(1, 4):
            w.write("train", step)
    tail = MetricsTail(path)
    assert len(tail.read_new()) == 3
    # Truncated and rewritten shorter.
    path.write_text("")
    with MetricsWriter(path) as w:
        w.write("train", 10)
    assert [e["step"] for e in tail.read_new()] == [10]
    # Replaced by a different, longer file.
    other = tmp_path / "other.jsonl"
    with MetricsWriter(other) as w:
        for step in range(20, 25):
            w.write("train", step)
    os.replace(other, path)
    assert [e["step"] for e in tail.read_new()] == [20, 21, 22, 23, 24]


def test_read_events_takes_complete_unterminated_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"v": 1, "event": "train", "step": 1}) + "\n" + json.dumps({"v": 1, "event": "train", "step": 2}))
    assert [e["step"] for e in read_events(path)] == [1, 2]
    path.write_text(json.dumps({"v": 1, "event": "train", "step": 1}) + '\n{"v": 1, "ev')
    assert [e["step"] for e in read_events(path)] == [1]
    assert read_events(tmp_path / "missing.jsonl") == []


def test_last_step(tmp_path):
    path = tmp_path / "m.jsonl"
    assert last_step(path) == 0
    with MetricsWriter(path) as w:
        w.write("train", 10)
        w.write("train", 20)
        w.write("val", 50)
        w.write("checkpoint", 40)
    assert last_step(path) == 20
