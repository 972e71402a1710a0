"""Trackers: `orpo-tui export RUN --to tensorboard|trackio|wandb` and a preset's live
`[report] to`, read back with each tracker's own reader and held to the run's metrics.jsonl.

One real demo run (20 steps, reports every 5, evaluations every 10, with greedy samples)
trains once for the module with `[report] to = ["tensorboard"]`; the exports replay it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import DEMO, REPO, first_line, run_trainer, start_trainer, train_steps, wait_for_step

from trainer.pure import tracking as T
from trainer.pure.events import read_events
from trainer.pure.run_folder import RunFolder, checkpoint_step

SHORT = ["--set", "training.iters=20", "--set", "training.steps_per_report=5", "--set", "training.steps_per_eval=10",
         "--set", "training.sample_prompts=2"]


def _env(tmp: Path, **extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), TRACKIO_DIR=str(tmp / "trackio"), WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
               WANDB_CACHE_DIR=str(tmp / "wandb-cache"), WANDB_DATA_DIR=str(tmp / "wandb-data"))
    env.pop("WANDB_MODE", None)  # the exporter must go offline by itself
    env.update(extra)
    return env


def export(tmp: Path, run: Path, *to: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", "export", str(run), "--to", *to], capture_output=True, text=True,
                          cwd=tmp, env=_env(tmp, **env), timeout=180)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished demo run that reported to TensorBoard live."""
    runs = tmp_path_factory.mktemp("runs")
    out = run_trainer(str(DEMO), "--runs-dir", str(runs), *SHORT, "--set", 'report.to=["tensorboard"]', "--log-only")
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.splitlines()[0])


def metric_rows(run: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """(tag, step) -> (value, wall time) for every number of every train and val event."""
    rows = {}
    for event in read_events(RunFolder(run).metrics):
        if event["event"] in ("train", "val"):
            for key, value in event.items():
                if key not in ("v", "event", "step", "time"):
                    rows[(f"{event['event']}/{key}", event["step"])] = (value, event["time"])
    return rows


def samples(run: Path) -> list[dict]:
    return [e for e in read_events(RunFolder(run).metrics) if e["event"] == "sample"]


def tensorboard_rows(logdir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    events = [(tag, e) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    rows = {(tag, e.step): (e.value, e.wall_time) for tag, e in events}
    assert len(rows) == len(events), "a step logged twice under one tag"
    return acc, rows


def assert_equal_to_metrics(rows: dict, run: Path) -> None:
    expected = metric_rows(run)
    assert set(rows) == set(expected)
    for key, (value, wall_time) in expected.items():
        # TensorBoard keeps scalars as float32; the wall time as a double.
        assert rows[key][0] == float(np.float32(value)), key
        assert rows[key][1] == wall_time, key


def test_the_run_carries_every_metric_and_samples(run):
    # What the trackers are checked against: every registered train and val metric, and samples.
    tags = {tag for tag, _ in metric_rows(run)}
    from trainer.pure.metrics import TRAIN_METRICS, VAL_METRICS

    assert tags == {f"train/{m}" for m in TRAIN_METRICS} | {f"val/{m}" for m in VAL_METRICS}
    assert {s["step"] for s in samples(run)} == {0, 10, 20}


def test_tensorboard_export_equals_metrics_jsonl(run, tmp_path):
    out = export(tmp_path, run, "tensorboard", str(tmp_path / "tb"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{tmp_path / 'tb'}\n"
    acc, rows = tensorboard_rows(tmp_path / "tb")
    assert_equal_to_metrics(rows, run)
    # The samples as text at their steps, the config as hyperparameters.
    for sample in samples(run):
        (event,) = [e for e in acc.Tensors(f"samples/{sample['index']}/text_summary") if e.step == sample["step"]]
        text = event.tensor_proto.string_val[0].decode()
        assert sample["prompt"] in text and sample["completion"] in text
        assert event.wall_time == sample["time"]
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["training.learning_rate"].number_value == 1e-3
    assert start.hparams["model.path"].string_value == "builtin:tiny"
    assert start.hparams["report.to"].string_value == '["tensorboard"]'
    experiment = plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.experiment.metric_infos] == ["val/loss", "val/rewards/accuracies",
                                                                        "val/rewards/margins"]


def test_live_tensorboard_equals_metrics_jsonl(run):
    _, rows = tensorboard_rows(RunFolder(run).tensorboard)
    assert_equal_to_metrics(rows, run)
    assert f"reporting to tensorboard: {RunFolder(run).tensorboard}" in RunFolder(run).log.read_text()


def test_live_tensorboard_of_a_killed_and_resumed_run_equals_metrics_jsonl(tmp_path):
    # Steps past the last checkpoint reach TensorBoard, the trainer dies, the resume redoes them:
    # TensorBoard must show each step once, with the values and times metrics.jsonl keeps.
    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", "training.iters=500",
                         "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=0",
                         "--set", "training.save_every=4", "--set", 'report.to=["tensorboard"]')
    run = first_line(proc)
    wait_for_step(run, 6, proc)
    proc.kill()
    proc.wait()
    _, before = tensorboard_rows(RunFolder(run).tensorboard)
    lost = max(train_steps(run))
    # TensorBoard holds steps past the checkpoint, which the resume redoes.
    assert max(step for _, step in before) > checkpoint_step(RunFolder(run).latest_checkpoint())
    done = run_trainer("--resume", str(run), "--set", f"training.iters={lost + 2}")
    assert done.returncode == 0, done.stderr
    assert train_steps(run) == list(range(1, lost + 3))
    _, rows = tensorboard_rows(RunFolder(run).tensorboard)
    assert_equal_to_metrics(rows, run)


def test_only_rank_0_of_a_distributed_run_reports(tmp_path):
    # Both ranks write into one folder if rank 1 reported too: each step would show twice.
    done = run_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--np", "2", "--backend", "ring",
                       "--set", "training.iters=4", "--set", "training.batch_size=4", "--set", "training.steps_per_report=1",
                       "--set", "training.steps_per_eval=2", "--set", "training.sample_prompts=0",
                       "--set", 'report.to=["tensorboard"]')
    assert done.returncode == 0, done.stderr
    run = Path(done.stdout.splitlines()[0])
    _, rows = tensorboard_rows(RunFolder(run).tensorboard)
    assert_equal_to_metrics(rows, run)
    assert "reporting to tensorboard" in RunFolder(run).log.read_text()
    assert "tensorboard" not in RunFolder(run).rank_log(1).read_text()


def test_trackio_export_writes_its_local_records(run, tmp_path):
    out = export(tmp_path, run, "trackio", "orpo-check")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"trackio project orpo-check, run {run.name}\n"
    probe = """
import json, sys, trackio
from trackio.sqlite_storage import SQLiteStorage
(r,) = list(trackio.Api().runs("orpo-check"))
print(json.dumps({"name": r.name, "config": r.config, "logs": SQLiteStorage.get_logs("orpo-check", r.name)}, default=str))
"""
    read = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert read.returncode == 0, read.stderr
    got = json.loads(read.stdout.splitlines()[-1])
    assert got["name"] == run.name
    assert got["config"]["training.iters"] == 20 and got["config"]["orpo.beta"] == 0.1
    rows = {(tag, log["step"]): value for log in got["logs"] for tag, value in log.items()
            if tag.startswith(("train/", "val/"))}
    assert rows == {key: value for key, (value, _) in metric_rows(run).items()}
    tables = {(tag, log["step"]): value["_value"] for log in got["logs"] for tag, value in log.items()
              if tag.startswith("samples/")}
    assert tables == {(f"samples/{s['index']}", s["step"]): [
        {"step": s["step"], "index": s["index"], "prompt": s["prompt"], "completion": s["completion"]}] for s in samples(run)}


def wandb_records(path: Path):
    """The records of a .wandb file, parsed with W&B's own protobuf types. The framing is
    the LevelDB log format W&B documents for it: 32 KiB blocks of chunks, each with a 7-byte
    header (CRC32C, length, type 1 full / 2 first / 3 middle / 4 last), after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_export_is_an_offline_run_with_every_metric(run, tmp_path):
    out = export(tmp_path, run, "wandb", str(tmp_path / "w"))
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert folder.parent == tmp_path / "w" / "wandb" and folder.name.startswith("offline-run-")
    (log,) = folder.glob("run-*.wandb")
    records = list(wandb_records(log))
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    rows = {(tag, row["_step"]): value for row in history for tag, value in row.items() if tag.startswith(("train/", "val/"))}
    assert rows == {key: value for key, (value, _) in metric_rows(run).items()}
    # One history row per step, stamped with the wall time of the last event logged at it.
    last_time = {}
    for event in read_events(RunFolder(run).metrics):
        if event["event"] in ("train", "val", "sample"):
            last_time[event["step"]] = event["time"]
    assert {row["_step"]: row["_timestamp"] for row in history} == last_time
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["training.learning_rate"] == 1e-3 and config["data.path"] == "builtin:demo"
    tables = sorted(folder.glob("files/media/table/samples/*.table.json"))
    assert len(tables) == len(samples(run))
    contents = [json.loads(t.read_text())["data"][0] for t in tables]
    assert sorted(c[1:] for c in contents) == sorted([s["index"], s["prompt"], s["completion"]] for s in samples(run))


def blocked(tmp: Path, module: str) -> str:
    """A folder that, put first on PYTHONPATH, makes `import module` fail as if it were absent."""
    shadow = tmp / "blocked"
    shadow.mkdir(exist_ok=True)
    (shadow / f"{module}.py").write_text(f"raise ModuleNotFoundError({'No module named ' + repr(module)!r}, name={module!r})\n")
    return f"{shadow}{os.pathsep}{REPO}"


@pytest.mark.parametrize("tracker,target", [("tensorboard", "tb"), ("trackio", "p"), ("wandb", "w")])
def test_export_without_the_library_names_the_extra(run, tmp_path, tracker, target):
    out = export(tmp_path, run, tracker, str(tmp_path / target), PYTHONPATH=blocked(tmp_path, T.module_of(tracker)))
    assert out.returncode == 2
    assert out.stderr == f"orpo-tui export: {tracker} needs {T.module_of(tracker)}: pip install 'orpo-tui[{tracker}]'\n"
    assert out.stdout == "" and not (tmp_path / target).exists()


def test_a_run_told_to_report_where_it_cannot_is_refused_before_training(tmp_path):
    runs = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "trainer", str(DEMO), "--runs-dir", str(runs), "--set", 'report.to=["wandb"]'],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=_env(tmp_path, PYTHONPATH=blocked(tmp_path, "wandb")))
    assert out.returncode == 2
    assert out.stderr == f"orpo-train: {DEMO}: report.to: wandb needs wandb: pip install 'orpo-tui[wandb]'\n"
    assert not runs.exists() or not any(runs.iterdir())


def test_a_resume_told_to_report_where_it_cannot_is_refused_too(run, tmp_path):
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("train.lock"))
    config = RunFolder(copy).config
    config.write_text(config.read_text().replace('to = [\n    "tensorboard",\n]', 'to = [\n    "wandb",\n]'))
    assert '"wandb"' in config.read_text()
    before = RunFolder(copy).metrics.read_bytes()
    out = subprocess.run([sys.executable, "-m", "trainer", "--resume", str(copy), "--set", "training.iters=30"],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=_env(tmp_path, PYTHONPATH=blocked(tmp_path, "wandb")))
    assert out.returncode == 2
    assert out.stderr == f"orpo-train: {config}: report.to: wandb needs wandb: pip install 'orpo-tui[wandb]'\n"
    assert RunFolder(copy).metrics.read_bytes() == before


def test_an_unknown_tracker_is_a_config_error(tmp_path):
    out = run_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--set", 'report.to=["tensorbored"]')
    assert out.returncode == 2
    assert "report.to" in out.stderr and "unknown tracker 'tensorbored'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_tracker_that_raises_mid_run_is_dropped_and_the_run_goes_on(tmp_path):
    from trainer.reporter import RunFolderReporter
    from trainer.trackers import LiveTrackers

    lines: list[str] = []
    trackers = LiveTrackers([T.TENSORBOARD], tmp_path, lines.append)
    reporter = RunFolderReporter(tmp_path, lines.append, trackers=trackers)
    reporter.on_start(0, 10, resumed=False)
    values = {"loss": 1.0, "nll_loss": 0.9, "log_odds_chosen": 0.1, "rewards/accuracies": 0.5, "pairs_per_second": 3.0}
    reporter.on_train(5, values)

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    trackers.sinks[T.TENSORBOARD].writer.add_scalar = broken
    reporter.on_train(10, values)
    reporter.on_train(15, values)  # no second complaint: the tracker is gone
    reporter.close()
    assert [line for line in lines if "tensorboard" in line] == [
        f"reporting to tensorboard: {tmp_path / 'tensorboard'}",
        "tensorboard: OSError: [Errno 28] No space left on device; no longer reporting to tensorboard"]
    assert [e["step"] for e in read_events(tmp_path / "metrics.jsonl") if e["event"] == "train"] == [5, 10, 15]
    _, rows = tensorboard_rows(tmp_path / "tensorboard")
    assert {step for _, step in rows} == {5}


def test_mapping_decodes_nonfinite_strings_and_flattens_config():
    event = {"v": 1, "event": "train", "step": 3, "time": 7.5, "loss": "nan", "rewards/margins": 2, "flag": True}
    rows = T.scalars(event)
    assert [(r.tag, r.step, r.wall_time) for r in rows] == [("train/loss", 3, 7.5), ("train/rewards/margins", 3, 7.5)]
    assert np.isnan(rows[0].value) and rows[1].value == 2.0
    assert T.scalars({"event": "checkpoint", "step": 3, "time": 1.0, "val_loss": 1.0}) == []
    assert T.flat_hparams({"a": 1, "b": {"c": "x", "d": {"e": [1, 2]}}}) == {"a": 1, "b.c": "x", "b.d.e": "[1, 2]"}
