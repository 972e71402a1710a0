"""What live tracker reporting costs the trainer: the trainer's own thread waits on each
tracker call, so this times what a preset's `[report] to` adds per report.

For each tracker whose library is installed (and, as the baseline, metrics.jsonl alone), a
fresh run folder with the default config, then through trainer.trackers.LiveTrackers as the
trainer uses it:

- open: the first event, which starts the tracker (imports excluded: the trainer imports
  the libraries when it checks them, before training);
- per train report: one train event carrying every train metric of the registry, median and
  95th percentile over `-n` events (TensorBoard flushes each one to disk);
- per val report: a val event plus two sample events, median;
- close: finishing the tracker at the end of the run.

    python tests/bench/tracker_overhead.py [-n 200]

Trackio and W&B write into a temporary folder (TRACKIO_DIR, W&B offline); nothing leaves
the machine.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

_TMP = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
os.environ["TRACKIO_DIR"] = str(_TMP / "trackio")  # read by trackio at import
os.environ["WANDB_DIR"] = str(_TMP / "wandb")
os.environ["WANDB_SILENT"] = "true"

from trainer.pure import metrics as M  # noqa: E402
from trainer.pure import tracking as T  # noqa: E402
from trainer.pure.config import Config, dump_toml  # noqa: E402
from trainer.pure.events import MetricsWriter  # noqa: E402
from trainer.trackers import LiveTrackers  # noqa: E402


def train_values(step: int) -> dict:
    return {name: 1.0 / (step + i + 1) for i, name in enumerate(M.TRAIN_METRICS)}


def val_values(step: int) -> dict:
    return {name: 2.0 / (step + i + 1) for i, name in enumerate(M.VAL_METRICS)}


def bench(tracker: str | None, n: int) -> dict:
    run = _TMP / f"run-{tracker or 'none'}"
    run.mkdir()
    dump_toml(Config(), run / "config.toml")
    lines: list[str] = []
    live = LiveTrackers([tracker], run, lines.append) if tracker else None
    writer = MetricsWriter(run / "metrics.jsonl")

    def emit(event: str, step: int, **values) -> float:
        start = time.perf_counter()
        record = writer.write(event, step, **values)
        if live is not None:
            live.event(record)
        return time.perf_counter() - start

    opened = emit("status", 0, state="running")
    train = [emit("train", step, **train_values(step)) for step in range(1, n + 1)]
    val = []
    for step in range(n + 1, n + 1 + max(n // 10, 5)):
        val.append(emit("val", step, **val_values(step)) + emit("sample", step, prompt="p", completion="c", index=0)
                   + emit("sample", step, prompt="q", completion="d", index=1))
    start = time.perf_counter()
    if live is not None:
        live.close()
    closed = time.perf_counter() - start
    writer.close()
    problems = [line for line in lines if not line.startswith("reporting to")]
    return {"open": opened, "train": train, "val": val, "close": closed, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="train reports per tracker")
    args = parser.parse_args()
    print(f"{args.n} train reports of {len(M.TRAIN_METRICS)} metrics each; times in ms")
    print(f"{'tracker':<22}{'open':>9}{'train p50':>11}{'train p95':>11}{'val+2 samples':>15}{'close':>9}")
    failed = False
    for tracker in (None, *T.TRACKERS):
        label = "metrics.jsonl only" if tracker is None else tracker
        if tracker is not None:
            try:
                importlib.import_module(T.module_of(tracker))
            except ImportError:
                print(f"{label:<22}not installed ({T.install_hint(tracker)})")
                continue
        got = bench(tracker, args.n)
        train = sorted(got["train"])
        p95 = train[min(len(train) - 1, int(len(train) * 0.95))]
        print(f"{label:<22}{got['open'] * 1e3:>9.1f}{statistics.median(train) * 1e3:>11.2f}{p95 * 1e3:>11.2f}"
              f"{statistics.median(got['val']) * 1e3:>15.2f}{got['close'] * 1e3:>9.1f}")
        for line in got["problems"]:
            print(f"  problem: {line}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
