"""Data-parallel speed: pairs/s of the demo on 1 rank and on 2 local ranks, per backend.

    python tests/bench/distributed_scaling.py [--rounds 5] [--iters 150] [--report 10] [--batch 8] [--backends ring,mpi]
    python tests/bench/distributed_scaling.py --matmul [--seconds 8]
    python tests/bench/distributed_scaling.py --profile [--steps 8] [--mpi-unbound]

Training: the demo preset (`presets/demo.toml`, batch 8, 150 steps) at the same global batch
on 1 rank and on 2 ranks of each backend, in interleaved rounds (1, 2 ring, 2 mpi, 1, ...) so
a change in the machine's speed spreads over every configuration. Each run is a real
`orpo-train --np N --backend B` in a temporary runs folder, without validation, samples or
checkpoints on the way; its pairs/s is read from its own metrics.jsonl, one figure per report
of `--report` steps, the first report left out (start-up and compiling). The 1-minute load
average is sampled every second during each run. A reference closes each round: two
independent 1-rank runs at half the batch, at once (the two ranks' work with no team, as the
OS schedules two processes here). The table gives, per configuration, the median/min/max of
the runs' median pairs/s, the speed-up of the median against 1 rank, the median of each
round's own ratio to its 1-rank run ("paired"), and the load average seen during its runs. The
target is >= 1.7x with the default backend (MPI on Linux when OpenMPI is installed). On a
machine other processes share, read the load column before the speed-up.

--matmul: the claim behind the default backend. A float32 matmul loop (no communication) in
two plain processes, in two ring ranks after `mx.distributed.init`, and in two MPI ranks
under mpirun, all at once per case; it prints GFLOP/s and the CPU each process used, and
their ratio (GFLOP per CPU second), which other load on the machine leaves alone: a transport
that polled between collectives would show as system CPU and fewer GFLOP per CPU second.

--profile: where a rank's step goes (tests/bench/rank_step.py in one process, 2 ring ranks and
2 MPI ranks): compute alone for new shapes and cached ones, the step as trained on a team,
and its two all_sums alone, in wall and CPU milliseconds per step.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from trainer.backend_choice import choose  # noqa: E402 (no mlx: the parent stays light)
from trainer.pure import metrics as M  # noqa: E402
from trainer.pure.events import read_events  # noqa: E402
from trainer.pure.run_folder import RunFolder  # noqa: E402
from trainer.pure.trainer_process import HOSTFILE_ENV, RANK_ENV, TRAINER  # noqa: E402
from trainer.ranks import mpirun_argv, ring_hostfile  # noqa: E402

DEMO = ROOT / "presets" / "demo.toml"
# OpenMPI reads its settings from OMPI_MCA_* variables, mpirun included: by default it binds
# each of 2 ranks to a core and a rank waiting in a collective spins without yielding.
MPI_UNBOUND = {"OMPI_MCA_hwloc_base_binding_policy": "none", "OMPI_MCA_mpi_yield_when_idle": "1"}


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class LoadSampler:
    """The 1-minute load average, sampled every second while a run lasts."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(load1())

    def __enter__(self) -> LoadSampler:
        self.samples.append(load1())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def children_cpu() -> tuple[float, float]:
    """User and system CPU seconds of every finished descendant (each was waited for by its
    parent: the launcher waits for its ranks, mpirun for its)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def train_once(work: Path, ranks: int, backend: str, iters: int, report: int, batch: int,
               env: dict | None = None, separate: int = 1) -> tuple[list[float], list[float], tuple]:
    """(pairs/s per report after the first, load samples, (user, system) CPU seconds of the
    whole run: start-up included, every process) of one real run; with `separate` > 1, that
    many independent runs at once, each at batch/separate, and their pairs/s added report by
    report (the work of that many ranks without a team)."""
    argvs = []
    for _ in range(separate):
        runs = Path(tempfile.mkdtemp(prefix=f"np{ranks}-{backend}-", dir=work))
        argvs.append([*TRAINER, str(DEMO), "--runs-dir", str(runs), "--np", str(ranks), "--backend", backend,
                      "--set", f"training.iters={iters}", "--set", f"training.steps_per_report={report}",
                      "--set", f"training.batch_size={batch // separate}",
                      "--set", "training.steps_per_eval=0", "--set", "training.sample_prompts=0",
                      "--set", f"training.save_every={iters + 1}"])
    cpu0 = children_cpu()
    with LoadSampler() as load:
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  env={**os.environ, **(env or {})}) for argv in argvs]
        outs = [p.communicate(timeout=1800) for p in procs]
    cpu = tuple(b - a for a, b in zip(cpu0, children_cpu()))
    total: list[float] = []
    for argv, p, (out, err) in zip(argvs, procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {err.strip()[-400:]}")
        run_dir = Path(out.splitlines()[0])
        rates = [e[M.PAIRS_PER_SECOND] for e in read_events(RunFolder(run_dir).metrics) if e["event"] == "train"][1:]
        total = [a + b for a, b in zip(total, rates)] if total else rates
    return total, load.samples, cpu


def scaling(args: argparse.Namespace) -> int:
    backends = args.backends.split(",") if args.backends else ["ring", *(["mpi"] if choose("mpi", 2).env else [])]
    default = choose("auto", 2).name
    configs = [(1, "any", ""), *((2, b, "") for b in backends)]
    if args.mpi_unbound and "mpi" in backends:
        configs.append((2, "mpi", "unbound"))
    if not args.no_separate:
        configs.append((1, "any", "separate"))
    label = {c: "1 rank" if c[0] == 1 and not c[2] else f"2 runs at batch {args.batch // 2} at once" if c[2] == "separate"
             else f"2 ranks {c[1]}" + (" (default)" if c[1] == default and not c[2] else "") + (" unbound" if c[2] else "")
             for c in configs}
    print(f"demo preset, batch {args.batch}, {args.iters} steps per run, a report every {args.report} steps (first left "
          f"out), {args.rounds} interleaved rounds; {os.cpu_count()} CPUs; backends {', '.join(backends)}; default here: {default}")
    results: dict[tuple, list[tuple[float, ...]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="orpo-scaling-") as tmp:
        for r in range(args.rounds):
            for c in configs:
                rates, load, cpu = train_once(Path(tmp), c[0], c[1], args.iters, args.report, args.batch,
                                              MPI_UNBOUND if c[2] == "unbound" else None, 2 if c[2] == "separate" else 1)
                med = statistics.median(rates)
                results[c].append((med, statistics.mean(load), sum(cpu), cpu[1]))
                paired = f" = {med / results[configs[0]][r][0]:.2f}x this round's 1 rank" if c != configs[0] else ""
                print(f"  round {r + 1} {label[c]:28s} pairs/s per report {' '.join(f'{x:.1f}' for x in rates)} "
                      f"-> median {med:.1f}{paired}; load avg {min(load):.2f}-{max(load):.2f}; "
                      f"CPU {sum(cpu):.1f} s ({cpu[1]:.1f} s system)", flush=True)
    base = statistics.median(m for m, *_ in results[configs[0]])
    print(f"\n{'configuration':30s}{'median':>8s}{'min':>8s}{'max':>8s}{'speed-up':>10s}{'paired':>8s}{'load avg':>10s}"
          f"{'CPU s/run':>11s}{'system':>8s}")
    for c in configs:
        meds = [m for m, *_ in results[c]]
        med = statistics.median(meds)
        paired = statistics.median(m / one[0] for m, one in zip(meds, results[configs[0]]))
        print(f"{label[c]:30s}{med:8.1f}{min(meds):8.1f}{max(meds):8.1f}{med / base:9.2f}x{paired:7.2f}x"
              f"{statistics.mean(x[1] for x in results[c]):10.2f}{statistics.median(x[2] for x in results[c]):11.1f}"
              f"{statistics.median(x[3] for x in results[c]):8.1f}")
    print("(pairs/s: median, min and max of the runs' medians; speed-up: the median against 1 rank's; paired: the median "
          "over rounds of each round's ratio to that round's 1-rank run, which the machine's drift between rounds leaves "
          "alone; load avg: mean of the 1-minute load average during its runs; CPU: all processes of a run, start-up "
          "included, median of the runs)")
    return 0


MATMUL = """
import os, sys, time
import mlx.core as mx
if sys.argv[1] != "plain":
    group = mx.distributed.init(strict=True, backend=sys.argv[1])
    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group))  # the group is up before timing
n, seconds = 512, float(sys.argv[2])
a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
mx.eval(a, b)
c0, t0, k = os.times(), time.perf_counter(), 0
while time.perf_counter() - t0 < seconds:
    mx.eval(a @ b)
    k += 1
c1, dt = os.times(), time.perf_counter() - t0
print(f"{2 * n**3 * k / dt / 1e9:.3f} {(c1.user - c0.user) / dt:.3f} {(c1.system - c0.system) / dt:.3f}", flush=True)
"""


def matmul(args: argparse.Namespace) -> int:
    """Two processes at once per case; each prints GFLOP/s, user and system CPU (cores)."""
    py = [sys.executable, "-c", MATMUL]

    def start(name: str) -> list[subprocess.Popen]:
        seconds = str(args.seconds)
        if name == "plain":
            return [subprocess.Popen([*py, "plain", seconds], stdout=subprocess.PIPE, text=True) for _ in range(2)]
        if name == "ring":
            hosts = Path(tempfile.mkstemp(suffix=".json")[1])
            hosts.write_text(ring_hostfile(2))
            return [subprocess.Popen([*py, "ring", seconds], stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, RANK_ENV: str(r), HOSTFILE_ENV: str(hosts)}) for r in range(2)]
        mpi = choose("mpi", 2)
        env = {**os.environ, **mpi.env}
        return [subprocess.Popen(mpirun_argv(2, [*py, "mpi", seconds], list(mpi.env)), stdout=subprocess.PIPE,
                                 text=True, env=env)]

    names = ["plain", "ring", *(["mpi"] if choose("mpi", 2).env else [])]
    single = subprocess.run([*py, "plain", str(args.seconds)], capture_output=True, text=True).stdout.split()
    print(f"one plain process alone: {single[0]} GFLOP/s (user {single[1]}, system {single[2]} cores: "
          f"{float(single[0]) / max(float(single[1]) + float(single[2]), 1e-9):.1f} GFLOP per CPU second); "
          f"load avg {load1():.2f}")
    for name in names:
        before = load1()
        procs = start(name)
        lines = [ln for p in procs for ln in p.communicate()[0].split("\n") if ln.strip()]
        total = sum(float(ln.split()[0]) for ln in lines)
        each = "; ".join(f"{x} GFLOP/s (user {u}, system {s} cores: {float(x) / max(float(u) + float(s), 1e-9):.1f} "
                         f"GFLOP per CPU second)" for x, u, s in (ln.split() for ln in lines))
        print(f"2 x {name:5s}: total {total:.2f} GFLOP/s = {total / float(single[0]):.2f}x one alone  [{each}]; "
              f"load avg {before:.2f}-{load1():.2f}")
    return 0


def profile(args: argparse.Namespace) -> int:
    """tests/bench/rank_step.py in one process, then in 2 ranks of each backend here."""
    script = [sys.executable, str(ROOT / "tests" / "bench" / "rank_step.py")]
    steps = ["--steps", str(args.steps)]
    cases = [("one process", [[*script, "any", *steps]], [{}])]
    hosts = Path(tempfile.mkstemp(suffix=".json")[1])
    hosts.write_text(ring_hostfile(2))
    cases.append(("2 ring ranks", [[*script, "ring", *steps]] * 2,
                  [{RANK_ENV: str(r), HOSTFILE_ENV: str(hosts)} for r in range(2)]))
    mpi = choose("mpi", 2)
    if mpi.env:
        cases.append(("2 MPI ranks", [mpirun_argv(2, [*script, "mpi", *steps], list(mpi.env))], [mpi.env]))
        if args.mpi_unbound:
            cases.append(("2 MPI ranks, unbound", [mpirun_argv(2, [*script, "mpi", *steps], list(mpi.env))],
                          [{**mpi.env, **MPI_UNBOUND}]))
    for name, argvs, envs in cases:
        print(f"{name} (load avg {load1():.2f}):", flush=True)
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **env})
                 for argv, env in zip(argvs, envs)]
        for p in procs:
            print("".join(f"  {ln}" for ln in sorted(p.communicate()[0].splitlines(keepends=True))), end="")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=150, help="steps per run (the demo's own)")
    ap.add_argument("--report", type=int, default=10, help="steps per report (one pairs/s figure each)")
    ap.add_argument("--backends", default="", help="comma-separated (default: ring, and mpi where installed)")
    ap.add_argument("--batch", type=int, default=8, help="the global batch (the demo's: 8)")
    ap.add_argument("--no-separate", action="store_true",
                    help="leave out the reference: 2 independent runs at half the batch, at once")
    ap.add_argument("--mpi-unbound", action="store_true",
                    help="also 2 MPI ranks with OpenMPI's core binding off and yielding while waiting")
    ap.add_argument("--matmul", action="store_true", help="the matmul claim check instead of training")
    ap.add_argument("--seconds", type=float, default=8.0, help="--matmul: seconds per process")
    ap.add_argument("--profile", action="store_true", help="a rank's step split into compute and collectives")
    ap.add_argument("--steps", type=int, default=8, help="--profile: global batches")
    args = ap.parse_args()
    return matmul(args) if args.matmul else profile(args) if args.profile else scaling(args)


if __name__ == "__main__":
    sys.exit(main())
