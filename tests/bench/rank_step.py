"""One rank's step, split into its parts (run by `distributed_scaling.py --profile`, once per
rank: MLX_RANK/MLX_HOSTFILE for ring, under mpirun for MPI, neither for one process).

    python tests/bench/rank_step.py BACKEND [--steps 8]

On the demo preset (batch 8), this rank's shares of the first `--steps` global batches, each
through the compiled train step twice: the first pass traces and compiles every new shape,
the second runs the cached graphs. Once without any collective ("compute only") and once as
the trainer runs it on a team (gradients averaged in the step, the metrics summed after).
Then the step's two collectives alone: an all_sum of a gradient-sized vector and one of the
metrics. Per part: wall, user and system CPU milliseconds per step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def clock() -> tuple[float, float, float]:
    t = os.times()
    return time.perf_counter(), t.user, t.system


def per_step(t0: tuple, t1: tuple, n: int) -> list[float]:
    return [(b - a) / n * 1e3 for a, b in zip(t0, t1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backend")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()

    import tempfile

    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    from trainer import data as D
    from trainer.layouts import BatchLayout, choose_layouts
    from trainer.loop import prepare
    from trainer.pure.config_toml import load_preset
    from trainer.run_control import RunLog
    from trainer.step import make_train_step
    from trainer.team import join

    team = join(args.backend)
    cfg = load_preset(ROOT / "presets" / "demo.toml")
    prep = prepare(cfg, RunLog(Path(tempfile.mkdtemp()) / "rank.log", echo=False), team=team)
    model, pad, t = prep.model, D.pad_id(prep.tokenizer), cfg.training
    batches = D.make_batches(prep.train_pairs, t.batch_size)
    first = [prep.train_pairs[i] for i in batches[0]]
    layout = BatchLayout(pad, *choose_layouts(model, first, pad, cfg.orpo.beta, prep.use_scores))
    optimizer = optim.AdamW(learning_rate=t.learning_rate)
    optimizer.init(model.trainable_parameters())
    shares = [layout.team_batch(prep.train_pairs, D.batch_at(batches, t.seed, k), team)[:3] for k in range(args.steps)]
    weight = mx.array(1.0)  # the demo's shares are even
    rows = []

    def passes(name: str, distributed: bool) -> None:
        step = make_train_step(model, optimizer, cfg, prep.use_scores, distributed)
        for label in ("new shapes", "cached"):
            team.barrier()
            t0 = clock()
            for arrays, extra, _ in shares:
                if distributed:
                    metrics, _ = step(*arrays, None, True, *extra, *(None,) * (2 - len(extra)), weight)
                    metrics = team.total(mx.stack(list(metrics.values())))
                else:
                    metrics, _ = step(*arrays, None, True, *extra)
                mx.eval(metrics, model.state, optimizer.state)
            rows.append((f"{name}, {label}", per_step(t0, clock(), len(shares))))

    passes("compute only", False)
    if team.distributed:
        passes("as trained", True)
        grad = mx.zeros((sum(v.size for _, v in tree_flatten(model.trainable_parameters())),))
        metrics = mx.zeros((12,))
        team.barrier()
        t0 = clock()
        for _ in shares:
            mx.eval(team.total(grad))
            mx.eval(team.total(metrics))
        rows.append((f"the 2 all_sums alone ({grad.size} + {metrics.size} floats)", per_step(t0, clock(), len(shares))))
    for name, (wall, user, system) in rows:
        print(f"rank {team.rank} of {team.size} ({args.backend}): {name:48s} wall {wall:7.1f}  user {user:6.1f}  "
              f"system {system:6.1f}  ms/step", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
