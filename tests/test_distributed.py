"""Data-parallel runs on MLX's ring backend with real rank processes on this machine.

A run on two ranks must be the same experiment as on one: the same global batches, the same
logged numbers at every step and the same adapters. Stopping reaches every rank, and a dead
rank ends the run as failed instead of leaving the others waiting in an all-reduce.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mlx.core as mx
import pytest

from tests.trainer_helpers import DEMO, ORPO_TRAIN, REPO, first_line, run_trainer, start_trainer, train_steps, wait_for_step
from trainer.backend_choice import choose
from trainer.pure import metrics as M
from trainer.pure.builtin_names import DEMO_DATA_DIR
from trainer.pure.config import load_preset
from trainer.pure.events import read_events
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import read_status
from trainer.pure.trainer_process import ExitCode, rank_from_env

# Small and quick; two micro-batches per step so accumulation is covered, and the 70
# validation pairs end in a short batch whose shares are uneven.
SMALL = ["--set", "training.iters=6", "--set", "training.batch_size=4", "--set", "training.grad_accumulation_steps=2",
         "--set", "training.steps_per_report=1", "--set", "training.steps_per_eval=3", "--set", "training.sample_prompts=0",
         "--set", "training.save_every=100"]
LONG = ["--set", "training.iters=400", "--set", "training.batch_size=4", "--set", "training.steps_per_report=1",
        "--set", "training.steps_per_eval=0", "--set", "training.sample_prompts=0", "--set", "training.save_every=1000"]


# Ring needs no install; MPI is tested where an MPI library and mpirun are installed.
BACKENDS_HERE = ["ring", pytest.param("mpi", marks=pytest.mark.skipif(not choose("mpi", 2).env,
                                                                     reason="no MPI library and mpirun here"))]


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_events(RunFolder(run_dir).metrics) if e["event"] == kind]


def _rank_pids(run_dir: Path) -> dict[int, int]:
    """The live rank processes of a run, by rank (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"--rank-of" not in argv or str(run_dir).encode() not in argv:
                continue
            env = dict(item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        rank = rank_from_env({k.decode(): v.decode() for k, v in env.items()})
        if rank is not None:  # not mpirun, which carries the ranks' command line too
            found[rank] = int(entry.name)
    return found


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_two_ranks_log_and_learn_what_one_process_does(tmp_path, backend):
    one = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "one"), *SMALL)
    assert one.returncode == 0, one.stderr
    two = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "two"), "--np", "2", "--backend", backend, *SMALL)
    assert two.returncode == 0, two.stderr
    a, b = Path(one.stdout.splitlines()[0]), Path(two.stdout.splitlines()[0])
    assert read_status(b)["state"] == "completed" and read_status(b)["world_size"] == 2

    for kind in ("train", "val"):
        ea, eb = _events(a, kind), _events(b, kind)
        assert [e["step"] for e in ea] == [e["step"] for e in eb]
        assert len(ea) >= (6 if kind == "train" else 3)
        for x, y in zip(ea, eb):
            for name in (*M.ORPO_METRICS, *((M.LEARNING_RATE,) if kind == "train" else ())):
                assert y[name] == pytest.approx(x[name], abs=1e-4), (kind, x["step"], name)

    wa = mx.load(str(RunFolder(a).adapter_weights))
    wb = mx.load(str(RunFolder(b).adapter_weights))
    assert wa.keys() == wb.keys()
    # Here only to float32's noise floor under AdamW: an element whose gradient is near zero
    # (LoRA's B on step 1, A on step 2) has its float32 rounding divided by its own size, so
    # one process summing the same pairs of each batch in reverse order already ends ~2e-5
    # away from itself after 6 steps. The 1e-5 comparison is the next test.
    for key in wa:
        assert mx.abs(wa[key] - wb[key]).max().item() < 1e-3, key

    # Rank 1 wrote its own log and nothing else.
    names_a = {p.name for p in a.iterdir()}
    names_b = {p.name for p in b.iterdir()}
    assert names_b - names_a == {RunFolder(b).rank_log(1).name}
    assert "rank 1 of 2" in RunFolder(b).rank_log(1).read_text()


def _uneven_demo_data(folder: Path) -> Path:
    """23 train pairs (batches of 4 and one of 3: rank 0 takes 2 of its pairs, rank 1 one)
    and 9 validation pairs (a last batch of 1: rank 1 has no share of it)."""
    folder.mkdir()
    for name, rows in (("train.jsonl", 23), ("valid.jsonl", 9)):
        lines = (DEMO_DATA_DIR / name).read_text().splitlines()[:rows]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


# AdamW normalizes each element by its own magnitude, which blows float32 rounding in
# near-zero gradients up to learning-rate-sized differences (see the test above). With every
# gradient element below AdamW's eps (1e-8), its update is close to momentum divided by eps:
# near linear in the gradient, so the adapters compare the applied gradients themselves. The
# clip puts the gradient there (norm 1e-9) and the learning rate makes the steps as large as a
# real run's (LoRA B reaches ~6e-2, against ~3e-2 at the demo's settings).
LINEAR_ADAMW = ["--set", "training.max_grad_norm=1e-9", "--set", "training.learning_rate=10"]


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_two_ranks_apply_the_gradient_one_process_does_to_1e_5(tmp_path, backend):
    """Uneven shares (2 and 1 of a short batch, 1 and 0 of a validation batch) and gradient
    accumulation, with AdamW's update linear in the gradient: the adapters of 2 ranks equal
    those of 1 process to 1e-5 after 6 steps (measured ~3e-8; ~6e-3 with the shares left
    unweighted, ~4e-2 with the gradients not averaged), and so do the logged numbers to 1e-4."""
    data = ["--set", f"data.path={_uneven_demo_data(tmp_path / 'data')}", *SMALL, *LINEAR_ADAMW]
    one = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "one"), *data)
    assert one.returncode == 0, one.stderr
    two = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "two"), "--np", "2", "--backend", backend, *data)
    assert two.returncode == 0, two.stderr
    a, b = Path(one.stdout.splitlines()[0]), Path(two.stdout.splitlines()[0])

    for kind in ("train", "val"):
        ea, eb = _events(a, kind), _events(b, kind)
        assert [e["step"] for e in ea] == [e["step"] for e in eb] and len(ea) >= 3
        for x, y in zip(ea, eb):
            for name in M.ORPO_METRICS:
                assert y[name] == pytest.approx(x[name], abs=1e-4), (kind, x["step"], name)

    wa = mx.load(str(RunFolder(a).adapter_weights))
    wb = mx.load(str(RunFolder(b).adapter_weights))
    assert wa.keys() == wb.keys()
    # LoRA's B starts at zero: the comparison is of weights that moved far more than 1e-5.
    assert max(mx.abs(w).max().item() for key, w in wa.items() if key.endswith("lora_b")) > 1e-3
    gaps = {key: mx.abs(wa[key] - wb[key]).max().item() for key in wa}
    assert max(gaps.values()) < 1e-5, max(gaps.items(), key=lambda kv: kv[1])


def test_batch_that_does_not_divide_across_ranks_is_one_line_exit_2(tmp_path):
    done = run_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--np", "3", "--set", "training.batch_size=4")
    assert done.returncode == ExitCode.BAD_INPUT
    assert done.stderr.strip().splitlines()[-1] == (
        "orpo-train: training.batch_size = 4 does not divide evenly across 3 ranks; choose a multiple of 3")
    assert not (tmp_path.exists() and any(tmp_path.iterdir()))


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_sigint_stops_every_rank_with_a_checkpoint_and_resumes_on_two_ranks_then_on_one(tmp_path, backend):
    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--np", "2", "--backend", backend, *LONG)
    run_dir = first_line(proc)
    wait_for_step(run_dir, 2, proc)
    ranks = _rank_pids(run_dir)
    assert sorted(ranks) == [0, 1]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == ExitCode.STOPPED, proc.stderr.read()
    assert _rank_pids(run_dir) == {}
    status = read_status(run_dir)
    assert status["state"] == "stopped"
    ckpt = RunFolder(run_dir).latest_checkpoint()
    assert ckpt is not None
    stopped_at = json.loads((ckpt / "state.json").read_text())["step"]

    # A resume goes on with the 2 ranks the run's config records, and its --set reaches both
    # (each rank reads config.toml, which a resume does not rewrite).
    assert load_preset(RunFolder(run_dir).config).distributed.np == 2
    done = run_trainer("--resume", str(run_dir), "--set", f"training.iters={stopped_at + 2}")
    assert done.returncode == 0, done.stderr
    assert read_status(run_dir)["state"] == "completed" and read_status(run_dir)["world_size"] == 2
    last = stopped_at + 2
    assert f"step {last}/{last}: loss" in RunFolder(run_dir).rank_log(1).read_text()

    # The checkpoint is global state: it resumes on any number of ranks.
    done = run_trainer("--resume", str(run_dir), "--np", "1", "--set", f"training.iters={stopped_at + 4}")
    assert done.returncode == 0, done.stderr
    assert read_status(run_dir)["state"] == "completed" and read_status(run_dir)["world_size"] == 1
    assert train_steps(run_dir) == list(range(1, stopped_at + 5))


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_a_dead_rank_fails_the_run_naming_it(tmp_path, backend):
    proc = start_trainer(str(DEMO), "--runs-dir", str(tmp_path), "--np", "2", "--backend", backend, *LONG)
    run_dir = first_line(proc)
    wait_for_step(run_dir, 1, proc)
    ranks = _rank_pids(run_dir)
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.monotonic()
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert time.monotonic() - killed < 60
    assert code == ExitCode.ERROR
    status = read_status(run_dir)
    assert status["state"] == "failed"
    assert status["error"].startswith("rank 1 was killed by SIGKILL")
    assert _rank_pids(run_dir) == {}
    assert proc.stderr.read().strip().splitlines()[-1].startswith("orpo-train: rank 1 was killed by SIGKILL")


def test_under_mpi_the_rank_mpirun_says_died_is_named_however_late_its_line_is_read(tmp_path, monkeypatch):
    # mpirun's line naming the killed rank is read by a thread; when mpirun had ended before
    # that thread read it, the launcher named rank 0 ("exited with code 137") instead.
    import sys

    from trainer import ranks
    from trainer.backend_choice import Backend
    from trainer.pure.runs import write_status

    line = "mpirun noticed that process rank 1 with PID 123 on node here exited on signal 9 (Killed)."
    fake_mpirun = [sys.executable, "-c", f"import sys; sys.stderr.write({line!r} + '\\n'); sys.exit(137)"]
    monkeypatch.setattr(ranks, "mpirun_argv", lambda *args, **kw: fake_mpirun)
    read = ranks.Ranks._read_mpirun

    def late_read(self, stream):
        time.sleep(0.5)  # a busy machine: the thread gets its turn after mpirun has ended
        read(self, stream)

    monkeypatch.setattr(ranks.Ranks, "_read_mpirun", late_read)
    write_status(tmp_path, state="running", step=3)
    team = ranks.Ranks(tmp_path, 2, None, Backend("mpi"), log_only=True)
    team.start()
    assert team.supervise() == ExitCode.ERROR
    assert read_status(tmp_path)["error"].startswith("rank 1 was killed by SIGKILL")


def test_local_ranks_share_one_memory_check_and_one_sleep_inhibitor(tmp_path):
    """Ranks started here share this machine's memory: each holds the model and half of every
    batch, so two of them must fit twice the one-rank estimate at half the batch. The machine
    is kept awake once, by the launcher (the pid the app knows), not once per rank."""
    from tests.test_keep_awake import CAFFEINATE, _calls, _env, _stand_in
    from trainer.pure.system_memory import DEVICE_MEMORY_ENV

    short = ["--set", "training.iters=2", "--set", "training.batch_size=4", "--set", "training.steps_per_eval=0",
             "--set", "training.sample_prompts=0", "--set", "training.save_every=100"]
    per_rank = run_trainer("estimate", str(DEMO), "--json", "--set", "training.batch_size=2")
    assert per_rank.returncode == 0, per_rank.stderr
    peak_gb = json.loads(per_rank.stdout)["peak_memory_gb"]
    _stand_in(tmp_path / "bin", "caffeinate", CAFFEINATE)
    env = {**_env(tmp_path, "darwin"), DEVICE_MEMORY_ENV: str(1.5 * peak_gb)}  # one rank fits, two do not
    argv = [*ORPO_TRAIN, str(DEMO), "--runs-dir", str(tmp_path / "runs"), "--np", "2", "--backend", "ring", *short]

    refused = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert refused.returncode == ExitCode.BAD_INPUT, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert "does not fit: est" in line and "for 2 rank(s) on this machine (2 of 4 pairs per batch each)" in line
    assert f"{2 * peak_gb * 1e3:.1f} MB" in line and "--force" in line
    assert read_status(Path(refused.stdout.splitlines()[0]))["state"] == "failed"

    forced = subprocess.run([*argv, "--force"], capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert forced.returncode == ExitCode.OK, forced.stderr
    run_dir = Path(forced.stdout.splitlines()[0])
    assert read_status(run_dir)["state"] == "completed"
    log = (run_dir / "train.log").read_text()
    assert "--force: training anyway" in log
    # The refused run's launcher held one too: one call per launcher, each waiting on its pid.
    calls = _calls(tmp_path)
    assert len(calls) == 2 and calls[1][1] == f"-i -w {read_status(run_dir)['pid']}"
    assert [ln for ln in log.splitlines() if "sleep" in ln][0].endswith(f"caffeinate holds it (pid {calls[1][0]})")
    assert log.count("sleep prevented") == 1
    assert "sleep" not in RunFolder(run_dir).rank_log(1).read_text()


def test_the_preset_distributed_section_sets_the_ranks_and_is_checked(tmp_path):
    """[distributed] np starts the ranks when no --np is given; --np overrides it; a batch
    that does not divide and a hostfile that is not there are refused in one line."""
    short = ["--set", "training.iters=1", "--set", "training.batch_size=4", "--set", "training.steps_per_eval=0",
             "--set", "training.sample_prompts=0"]
    two = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "two"), "--set", "distributed.np=2",
                      "--set", "distributed.backend=ring", *short)
    assert two.returncode == 0, two.stderr
    run_dir = Path(two.stdout.splitlines()[0])
    assert read_status(run_dir)["world_size"] == 2
    assert "rank 1 of 2 (ring backend)" in RunFolder(run_dir).rank_log(1).read_text()

    one = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "one"), "--set", "distributed.np=2", "--np", "1", *short)
    assert one.returncode == 0, one.stderr
    run_dir = Path(one.stdout.splitlines()[0])
    assert read_status(run_dir)["world_size"] == 1 and not RunFolder(run_dir).rank_log(1).exists()

    odd = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "odd"), "--set", "distributed.np=3", *short)
    assert odd.returncode == ExitCode.BAD_INPUT
    assert "training.batch_size" in odd.stderr and "multiple of distributed.np (3)" in odd.stderr
    hosts = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "hosts"), "--set", "distributed.hostfile=hosts.json", *short)
    assert hosts.returncode == ExitCode.BAD_INPUT
    [line] = hosts.stderr.strip().splitlines()
    assert line == "orpo-train: hosts.json: no such hostfile"


def test_the_default_backend_is_the_one_that_scales_here(monkeypatch):
    import trainer.backend_choice as B

    monkeypatch.setattr(B, "find_libmpi", lambda: "/usr/lib/x86_64-linux-gnu/libmpi.so.40")
    monkeypatch.setattr(B.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert B.choose("auto", 2, "darwin") == B.Backend("ring")
    linux = B.choose("auto", 2, "linux")
    assert linux.name == "mpi" and linux.env == {B.MPI_LIBNAME_ENV: "/usr/lib/x86_64-linux-gnu/libmpi.so.40"}
    assert B.choose("ring", 2, "linux") == B.Backend("ring")

    monkeypatch.setattr(B, "find_libmpi", lambda: None)
    fallback = B.choose("auto", 2, "linux")
    assert fallback.name == "ring" and "2 ranks on this machine will not train faster than one" in fallback.note
    assert "openmpi" in fallback.note.lower()
