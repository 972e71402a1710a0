"""What the run monitor pays per update: a chart redraw, and reading new metrics lines.

(a) Chart redraw: a noisy loss curve of 10k and 100k reports, drawn at 120x20 as the
    monitor draws it: `downsample` to the chart width, then `render_chart` with a
    validation series on top. Median of `-n` runs, with the two parts timed apart too.
    Target: under 50 ms at 100k points.
(b) Tail throughput: a 100k-line metrics.jsonl of train events carrying every TRL metric
    name (and a val event every 100 steps), read from scratch by `MetricsTail.read_new()`
    and filed by `RunSeries.add`: lines/s and MB/s for each part and both together.
(c) Incremental tail: one line appended to a file of 10k and of 100k lines, then
    `read_new()` + `add`. Median over 200 appends (or `-n`, if larger); it must not grow
    with the file.

    python bench/charts_and_tail.py [-n 10]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.pure.events import MetricsTail, MetricsWriter  # noqa: E402
from trainer.pure.metrics import ORPO_METRICS, RATE_METRICS  # noqa: E402
from tui.charts import ChartSeries, render_chart  # noqa: E402
from tui.series import RunSeries, downsample  # noqa: E402

WIDTH, HEIGHT = 120, 20
TARGET_MS = 50.0
INCREMENTAL_APPENDS = 200


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _train_values(step: int, rng: random.Random) -> dict:
    loss = 1.8 * math.exp(-step / 30_000) + 0.4 + rng.gauss(0, 0.05)
    values = {name: rng.uniform(-2, 2) for name in ORPO_METRICS}
    values.update(
        {
            "loss": loss,
            "nll_loss": loss * 0.9,
            "rewards/accuracies": min(1.0, max(0.0, 0.5 + step / 200_000 + rng.gauss(0, 0.1))),
            "learning_rate": 1e-5 * min(1.0, step / 1000),
            "tokens_per_second": rng.uniform(900, 1100),
            "pairs_per_second": rng.uniform(3, 4),
            "peak_memory_gb": 3.2,
        }
    )
    assert set(values) == set(ORPO_METRICS + RATE_METRICS)
    return values


def write_metrics(path: Path, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with MetricsWriter(path) as w:
        written, step = 0, 0
        while written < lines:
            step += 1
            w.write("train", step, **_train_values(step, rng))
            written += 1
            if step % 100 == 0 and written < lines:
                w.write("val", step, **{"loss": 0.5 + rng.random() * 0.1, "rewards/accuracies": 0.7})
                written += 1


# -- (a) -----------------------------------------------------------------------------------


def bench_redraw(points: int, runs: int) -> dict:
    rng = random.Random(points)
    steps = list(range(1, points + 1))
    loss = [1.8 * math.exp(-s / (points / 3)) + 0.4 + rng.gauss(0, 0.05) for s in steps]
    loss[points // 3] = 5.0  # a spike the chart must still show
    val_steps = steps[:: max(points // 20, 1)]
    val = [1.8 * math.exp(-s / (points / 3)) + 0.5 for s in val_steps]

    def sample() -> list:
        return [ChartSeries("train loss", *downsample(steps, loss, WIDTH)), ChartSeries("val loss", val_steps, val, style="points")]

    prepared = sample()
    return {
        "points": points,
        "downsample": _median_ms(lambda: downsample(steps, loss, WIDTH), runs),
        "render": _median_ms(lambda: render_chart(prepared, WIDTH, HEIGHT, title="loss"), runs),
        "total": _median_ms(lambda: render_chart(sample(), WIDTH, HEIGHT, title="loss"), runs),
    }


# -- (b) -----------------------------------------------------------------------------------


def bench_throughput(folder: Path, lines: int) -> dict:
    path = folder / "throughput.jsonl"
    write_metrics(path, lines)
    size = path.stat().st_size
    t = time.perf_counter()
    events = MetricsTail(path).read_new()
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    RunSeries().add(events)
    add_s = time.perf_counter() - t
    assert len(events) == lines
    return {"lines": lines, "bytes": size, "read": read_s, "add": add_s}


# -- (c) -----------------------------------------------------------------------------------


def bench_incremental(folder: Path, lines: int, runs: int) -> float:
    path = folder / f"incremental-{lines}.jsonl"
    write_metrics(path, lines)
    tail, series = MetricsTail(path), RunSeries()
    series.add(tail.read_new())
    rng = random.Random(1)
    times = []
    with MetricsWriter(path) as w:
        for k in range(runs):
            step = lines + 1000 + k
            w.write("train", step, **_train_values(step, rng))
            t = time.perf_counter()
            taken = series.add(tail.read_new())
            times.append(time.perf_counter() - t)
            assert taken == 1
    return statistics.median(times) * 1e6


# -- report --------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs per timing (median reported)")
    args = parser.parse_args(argv)

    print(f"(a) chart redraw at {WIDTH}x{HEIGHT}, median of {args.n} (ms)")
    print(f"    {'points':>8}  {'downsample':>10}  {'render':>8}  {'total':>8}  target < {TARGET_MS:g} ms")
    ok = True
    for points in (10_000, 100_000):
        r = bench_redraw(points, args.n)
        verdict = "ok" if r["total"] < TARGET_MS else "OVER"
        ok &= r["total"] < TARGET_MS or points < 100_000
        print(f"    {points:>8,}  {r['downsample']:>10.2f}  {r['render']:>8.2f}  {r['total']:>8.2f}  {verdict}")

    with tempfile.TemporaryDirectory(prefix="bench-tail-") as tmp:
        folder = Path(tmp)
        r = bench_throughput(folder, 100_000)
        mb = r["bytes"] / 1e6
        print(f"\n(b) tail throughput: {r['lines']:,} lines, {mb:.1f} MB read from scratch")
        print(f"    {'stage':<24}  {'s':>6}  {'lines/s':>10}  {'MB/s':>7}")
        for stage, secs in (("MetricsTail.read_new", r["read"]), ("RunSeries.add", r["add"]), ("both", r["read"] + r["add"])):
            print(f"    {stage:<24}  {secs:>6.2f}  {r['lines'] / secs:>10,.0f}  {mb / secs:>7.1f}")

        # Each append costs microseconds, so many of them steady the median on a busy machine.
        appends = max(args.n, INCREMENTAL_APPENDS)
        print(f"\n(c) incremental tail: 1 line appended, read_new + add, median of {appends} (µs)")
        print(f"    {'file lines':>10}  {'µs':>8}")
        for lines in (10_000, 100_000):
            print(f"    {lines:>10,}  {bench_incremental(folder, lines, appends):>8.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
