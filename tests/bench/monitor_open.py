"""How long a screen takes to open, from ``push_screen`` to its first full frame.

    python tests/bench/monitor_open.py [-n 5]

One function per screen, each timing that screen in a headless app at 160x48 and printing
its median and minimum milliseconds; ``main`` runs them all. The monitor is timed on a new
run (a few reports) and on a long one (20k reports, as after a night of training): its
first frame must come within 0.3 s either way, the charts following on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from trainer.pure.events import MetricsWriter  # noqa: E402
from trainer.pure.metrics import ORPO_METRICS  # noqa: E402
from trainer.pure.run_folder import RunFolder  # noqa: E402
from trainer.pure.runs import write_status  # noqa: E402

SIZE = (160, 48)
MONITOR_TARGET_S = 0.3


def _write_run(runs: Path, name: str, reports: int) -> Path:
    run = RunFolder(runs / name)
    run.root.mkdir(parents=True)
    run.config.write_text((REPO / "presets" / "demo.toml").read_text())
    write_status(run.root, state="stopped", step=reports, total_steps=reports * 2, started_at=1.0, ended_at=2.0)
    with MetricsWriter(run.metrics) as w:
        for step in range(1, reports + 1):
            values = {m: math.exp(-step / 500) + math.sin(step) * 0.01 for m in ORPO_METRICS}
            w.write("train", step, time=1000.0 + step, **values, learning_rate=1e-3, tokens_per_second=50.0,
                    pairs_per_second=2.0, peak_memory_gb=0.1)
            if step % 100 == 0:
                w.write("val", step, time=1000.5 + step, **values, val_time=0.1)
                w.write("sample", step, prompt="p", completion="c", index=0)
    return run.root


async def _time_monitor(run_dir: Path, runs: Path) -> float:
    from tui.app import make_app
    from tui.screens.monitor import MonitorScreen

    app = make_app(runs.parent / "presets", runs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        painted = asyncio.Event()
        start = time.perf_counter()
        screen = MonitorScreen(app.workspace, run_dir)
        # The first frame the screen sends to the terminal, its widgets laid out.
        app.call_after_refresh(lambda: None)
        screen.call_after_refresh(painted.set)
        await app.push_screen(screen)
        await painted.wait()
        return time.perf_counter() - start


def monitor(samples: int) -> bool:
    """The run monitor: a new run and a long one. True when both meet the target."""
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        (Path(tmp) / "presets").mkdir()
        for label, reports in (("new run", 20), ("20k reports", 20_000)):
            run_dir = _write_run(runs, f"20260101-00000{reports % 10}-{reports}", reports)
            times = [asyncio.run(_time_monitor(run_dir, runs)) for _ in range(samples)]
            median = statistics.median(times)
            ok &= median <= MONITOR_TARGET_S
            print(f"monitor, {label}: median {median * 1000:.0f} ms, min {min(times) * 1000:.0f} ms "
                  f"(target {MONITOR_TARGET_S * 1000:.0f} ms) samples {[round(t * 1000) for t in times]}")
    return ok


SCREENS = {"monitor": monitor}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=5, help="samples per screen")
    parser.add_argument("screens", nargs="*", default=list(SCREENS), help=f"screens to time: {', '.join(SCREENS)}")
    args = parser.parse_args()
    ok = all([SCREENS[name](args.n) for name in args.screens])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
