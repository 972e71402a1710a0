"""What one rank's share of a batch costs against the whole batch, in one process.

    python tests/bench/split_cost.py [--epochs 3] [--ranks 2]

The ceiling of data parallelism on a model before any communication or any second core: on
the demo preset (batch 8), the compiled train step on each global batch whole (one rank), and
on each rank's share of it as the trainer pads it (`BatchLayout.team_batch`), one after the
other in the same process for every batch, `--epochs` epochs: the median of the steps that ran a cached
graph, and what a team on free cores would pay over all of them, compiles included (at each
step the slowest rank's time), with the shares padded alike as now or each alone as before. A
step has parts that do not shrink with the batch (every op's dispatch, the optimizer
update over the adapters), so a share costs more than 1/ranks of the whole; with N ranks on N
free cores a team can go at most whole/share (of its slowest share) times one rank's speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    args = ap.parse_args()

    import mlx.core as mx
    import mlx.optimizers as optim
    from demo_setup import prepared_demo  # beside this script

    from trainer import data as D
    from trainer.step import ShapeBoundedStep, make_train_step
    from trainer.team import Team

    demo = prepared_demo()
    cfg, prep, batches, layout = demo.cfg, demo.prep, demo.batches, demo.layout
    optimizer = optim.AdamW(learning_rate=cfg.training.learning_rate)
    optimizer.init(prep.model.trainable_parameters())
    whole = Team()
    shares = [Team(rank=r, size=args.ranks) for r in range(args.ranks)]
    # name -> (team, pad each share to the largest share's sizes as the trainer does, or alone)
    cases = {"whole batch (1 rank)": (whole, True),
             **{f"rank {t.rank}'s share": (t, True) for t in shares},
             **{f"rank {t.rank}'s share, padded alone": (t, False) for t in shares}}
    steps = {name: ShapeBoundedStep(lambda: make_train_step(prep.model, optimizer, cfg, prep.use_scores)) for name in cases}
    times: dict[str, list[tuple[float, bool]]] = {name: [] for name in cases}  # (seconds, compiled it)
    prep.model.train()
    for k in range(args.epochs * len(batches)):
        idx = D.batch_at(batches, cfg.training.seed, k)
        for name, (team, alike) in cases.items():
            if alike:
                arrays, extra, _, _ = layout.team_batch(prep.train_pairs, idx, team)
            else:  # before ranks padded alike: each its own share, its own sizes
                arrays, extra, _ = layout.device_batch([prep.train_pairs[i] for i in team.share(idx)])
            call = (*arrays, None, True, *extra)
            new = not steps[name].holds(*call)
            tic = time.perf_counter()
            metrics, _ = steps[name](*call)
            mx.eval(metrics, prep.model.state, optimizer.state)
            times[name].append((time.perf_counter() - tic, new))

    def cached(name: str) -> float:
        return statistics.median(t for t, new in times[name] if not new)

    print(f"demo, batch {cfg.training.batch_size}, {args.epochs} epochs of {len(batches)} batches, {args.ranks} shares")
    base = cached("whole batch (1 rank)")
    for name in cases:
        n_new = sum(new for _, new in times[name])
        print(f"  {name:32s} cached steps: median {cached(name) * 1e3:6.1f} ms (whole / this {base / cached(name):.2f}); "
              f"{n_new} steps compiled")
    # A team waits at every step for its slowest rank: what it pays is the sum of the maxima.
    total = sum(t for t, _ in times["whole batch (1 rank)"])
    for label, alike in (("padded alike", True), ("padded alone", False)):
        names = [n for n, (t, a) in cases.items() if t.size > 1 and a == alike]
        team = sum(max(times[n][k][0] for n in names) for k in range(len(times[names[0]])))
        print(f"  a team of {args.ranks} on free cores, {label}: {team:6.1f} s against one rank's {total:6.1f} s "
              f"(every step, compiles included) = {total / team:.2f}x at most")
    return 0


if __name__ == "__main__":
    sys.exit(main())
