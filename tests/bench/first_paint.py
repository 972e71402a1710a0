"""Time from process start to first paint: orpo-tui's preset list vs a bare Textual app.

Each sample is a fresh `python` subprocess, so interpreter start-up and every import count.
The parent stamps `time.time()` (epoch seconds, comparable across processes) just before it
starts the child and passes it in the environment; the child runs its app headless at 80x24
and records the moment the first full frame of the screen we care about, showing its
content, is handed to the terminal driver (the preset list with the demo preset's row for
ours, the default screen with its Static for the bare app), then exits. Headless Textual
skips the final encode to escape codes, so the child does that encode itself: the figure
covers everything a real terminal would wait for except the write.

Samples are interleaved (bare, ours, bare, ours, ... with the order swapped every round) so
that drift in machine load hits both equally. One unrecorded warm-up round fills the
bytecode and file caches first.

Also reported: whether `mlx` (or mlx_lm, datasets, transformers) was imported by the time
the app painted, and by the time the process ended. The app must never import them.

    python bench/first_paint.py [-n 5] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("mlx", "mlx_lm", "datasets", "transformers")
KINDS = ("bare", "ours")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------------------- child


def _heavy_loaded() -> list[str]:
    return sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in HEAVY})


def child(kind: str) -> None:
    t0 = float(os.environ["FIRST_PAINT_T0"])
    sys.path.insert(0, str(REPO))

    from textual._compositor import LayoutUpdate
    from textual.app import App

    if kind == "bare":
        from textual.widgets import Static

        class Bare(App):
            def compose(self):
                yield Static("Hello from a bare Textual app")

        app = Bare()
        target, marker = "Screen", "Hello from a bare Textual app"
    else:
        from tui.app import make_app

        app = make_app(Path(os.environ["FIRST_PAINT_PRESETS"]), Path(os.environ["FIRST_PAINT_RUNS"]))
        target, marker = "PresetListScreen", "builtin:tiny"  # a cell of the demo preset's row

    result: dict = {}
    original = App._display

    def _display(self, screen, renderable) -> None:
        original(self, screen, renderable)
        if "ms" in result or renderable is None or self._batch_count or type(screen).__name__ != target:
            return
        # The encode to escape codes that a real terminal driver does (headless skips it).
        text = ANSI.sub("", renderable.render_segments(self.console))
        # First paint = the first full frame of the target screen that shows its content;
        # Textual may send partial updates (footer, cursor) before the first full layout.
        if isinstance(renderable, LayoutUpdate) and marker in text:
            result["ms"] = (time.time() - t0) * 1000
            result["heavy_at_paint"] = _heavy_loaded()
            self.exit()

    App._display = _display
    app.run(headless=True, size=(80, 24))
    if "ms" not in result:
        raise SystemExit(f"{kind}: the app exited without painting {marker!r}")
    result["heavy_at_exit"] = _heavy_loaded()
    print(json.dumps(result))


# ---------------------------------------------------------------------------- parent


def sample(kind: str, env: dict) -> dict:
    env = {**env, "FIRST_PAINT_T0": repr(time.time())}
    try:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", kind],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{kind} child did not paint within 60 s") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"{kind} child failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="samples of each app (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first (default 1)")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    with tempfile.TemporaryDirectory(prefix="orpo-tui-bench-") as tmp:
        presets = Path(tmp) / "presets"
        presets.mkdir()
        shutil.copy(REPO / "presets" / "demo.toml", presets / "demo.toml")
        env = {**os.environ, "FIRST_PAINT_PRESETS": str(presets), "FIRST_PAINT_RUNS": str(Path(tmp) / "runs")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        for _ in range(args.warmup):
            for kind in KINDS:
                sample(kind, env)

        times: dict[str, list[float]] = {k: [] for k in KINDS}
        heavy: dict[str, set[str]] = {k: set() for k in KINDS}
        for i in range(args.n):
            for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
                r = sample(kind, env)
                times[kind].append(r["ms"])
                heavy[kind].update(r["heavy_at_paint"], r["heavy_at_exit"])

    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    print(f"first paint (process start -> first full frame with content, 80x24 headless), "
          f"N={args.n} each, interleaved, {sys.executable}")
    print(f"{'app':<6} {'median ms':>10} {'min ms':>8}   samples (ms)")
    for k in KINDS:
        print(f"{k:<6} {med[k]:>10.0f} {low[k]:>8.0f}   " + " ".join(f"{t:.0f}" for t in times[k]))
    print(f"ratio ours/bare: median {med['ours'] / med['bare']:.2f}x, min {low['ours'] / low['bare']:.2f}x")
    for k in KINDS:
        print(f"heavy modules imported by {k}: {', '.join(sorted(heavy[k])) or 'none'}")
    if heavy["ours"]:
        raise SystemExit("orpo-tui imported " + ", ".join(sorted(heavy["ours"])))


if __name__ == "__main__":
    main()
