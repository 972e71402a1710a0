"""The memory estimate against what MLX measures, on the tiny built-in model.

For a few configs it trains a handful of steps with the real trainer, reads the run's
`peak_memory_gb`, and prints it beside `trainer.pure.estimate` for the same config with the
data's real padded length (from the preflight). The error column is (estimate - measured)
/ measured.

    python bench/estimate_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from trainer.data import PAD_MULTIPLE
from trainer.pure.config import apply_overrides, load_preset
from trainer.pure.estimate import estimate, model_shape

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "presets" / "demo.toml"
CONFIGS = {
    "lora r8 b8": ["finetune.rank=8", "training.batch_size=8"],
    "lora r32 b16": ["finetune.rank=32", "training.batch_size=16"],
    "dora r8 b4": ["finetune.type=dora", "training.batch_size=4"],
    "full b8": ["finetune.type=full", "training.batch_size=8", "training.learning_rate=1e-5"],
}


def padded_longest() -> int:
    out = subprocess.run([sys.executable, "-m", "trainer", "preflight", str(DEMO)], capture_output=True, text=True, cwd=ROOT)
    longest = json.loads(out.stdout)["tokens"]["train"]["longest"]
    return -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE


def measured_peak(overrides: list[str], runs: Path, batch_size: int, train_rows: int = 432) -> float:
    """Peak over one whole epoch: the longest batch, which sets the peak, comes up somewhere."""
    iters = -(-train_rows // batch_size)
    sets = [x for o in overrides + [f"training.iters={iters}", "training.steps_per_eval=0",
                                    f"training.steps_per_report={iters}", "training.save_every=100000"]
            for x in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "trainer", str(DEMO), "--runs-dir", str(runs), *sets],
                          capture_output=True, text=True, cwd=ROOT)
    run_dir = Path(proc.stdout.splitlines()[0])
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(e["peak_memory_gb"] for e in events if e.get("event") == "train")


def main() -> int:
    shape = model_shape("builtin:tiny")
    seq = padded_longest()
    print(f"tiny model: {shape.params:,} weights; demo batches padded to at most {seq} tokens")
    print(f"{'config':<14} {'measured MB':>12} {'estimate MB':>12} {'error':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in CONFIGS.items():
            cfg = apply_overrides(load_preset(DEMO), overrides)
            est = estimate(cfg, shape, seq_len=seq).total_gb
            got = measured_peak(overrides, Path(tmp), cfg.training.batch_size)
            print(f"{name:<14} {got * 1e3:>12.1f} {est * 1e3:>12.1f} {100 * (est - got) / got:>6.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
