"""`orpo-train --hostfile`: real ranks on the hosts of an mlx.launch hostfile.

Hosts that are this machine run their ranks directly; any other host is reached through
`ssh`, here the stand-in tests/fake_ssh/ssh on PATH, which runs the command on this machine
as sshd would. So a "remote" rank goes through everything a remote rank does (the run
folder's files staged at the same path, the launch script, its pid, its output coming back
through ssh, a stop sent with `ssh HOST kill`) except the network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_distributed import BACKENDS_HERE, LONG, SMALL, _events, _rank_pids
from tests.trainer_helpers import DEMO, ORPO_TRAIN, REPO, first_line, train_steps, wait_for_step
from trainer.pure import metrics as M
from trainer.pure.config import load_preset
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import read_status
from trainer.pure.trainer_process import ExitCode

FAKE_SSH = REPO / "tests" / "fake_ssh"
HERE_AND_MAC2 = [{"ssh": "localhost", "ips": ["127.0.0.1"]}, {"ssh": "mac2", "ips": ["127.0.0.1"]}]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PATH": f"{FAKE_SSH}{os.pathsep}{os.environ['PATH']}", "FAKE_SSH_LOG": str(tmp_path / "ssh.log")}


def _hostfile(tmp_path: Path, hosts, name="hosts.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(hosts))
    return path


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ORPO_TRAIN, *args], capture_output=True, text=True, timeout=300, cwd=REPO, env=_env(tmp_path))


def _ssh_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "ssh.log"
    return [ln.split("\t") for ln in log.read_text().splitlines() if ln.count("\t") >= 2] if log.exists() else []


def test_a_rank_over_ssh_trains_the_same_run_as_one_process(tmp_path):
    one = _run(tmp_path, str(DEMO), "--runs-dir", str(tmp_path / "one"), *SMALL)
    assert one.returncode == 0, one.stderr
    hostfile = _hostfile(tmp_path, HERE_AND_MAC2)
    two = _run(tmp_path, str(DEMO), "--runs-dir", str(tmp_path / "two"), "--hostfile", str(hostfile), *SMALL)
    assert two.returncode == 0, two.stderr
    a, b = Path(one.stdout.splitlines()[0]), Path(two.stdout.splitlines()[0])
    assert read_status(b)["state"] == "completed" and read_status(b)["world_size"] == 2
    for kind in ("train", "val"):
        ea, eb = _events(a, kind), _events(b, kind)
        assert [e["step"] for e in ea] == [e["step"] for e in eb] and len(ea) >= 2
        for x, y in zip(ea, eb):
            for name in M.ORPO_METRICS:
                assert y[name] == pytest.approx(x[name], abs=1e-4), (kind, x["step"], name)

    # mac2 got the run's config at the same path, then its rank, both in batch mode; rank 1's
    # output came back through ssh into its log here.
    calls = _ssh_calls(tmp_path)
    assert [c[1] for c in calls] == ["mac2", "mac2"]
    assert all("-o BatchMode=yes" in c[0] for c in calls)
    assert f"> {RunFolder(b).config}.part" in calls[0][2]
    assert calls[1][2].startswith("echo $$;") and "export MLX_RANK=1;" in calls[1][2] and "--remote" in calls[1][2]
    assert "rank 1 of 2 (ring backend)" in RunFolder(b).rank_log(1).read_text()
    assert "2 ranks on the hosts of" in RunFolder(b).log.read_text()
    # A resume finds the hosts from any folder.
    assert load_preset(RunFolder(b).config).distributed.hostfile == str(hostfile)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_a_hostfile_of_this_machine_twice_needs_no_ssh(tmp_path, backend):
    twice = _hostfile(tmp_path, {"backend": backend, "hosts": [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2})
    done = _run(tmp_path, str(DEMO), "--runs-dir", str(tmp_path), "--hostfile", str(twice),
                *SMALL, "--set", "training.iters=1")
    assert done.returncode == 0, done.stderr
    run_dir = Path(done.stdout.splitlines()[0])
    assert read_status(run_dir)["state"] == "completed" and read_status(run_dir)["world_size"] == 2
    assert f"rank 1 of 2 ({backend} backend)" in RunFolder(run_dir).rank_log(1).read_text()
    assert _ssh_calls(tmp_path) == []


def test_sigint_reaches_the_rank_over_ssh_and_a_resume_continues_on_the_hosts(tmp_path):
    hostfile = _hostfile(tmp_path, HERE_AND_MAC2)
    proc = subprocess.Popen([*ORPO_TRAIN, str(DEMO), "--runs-dir", str(tmp_path), "--hostfile", str(hostfile), *LONG],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(tmp_path))
    run_dir = first_line(proc)
    wait_for_step(run_dir, 2, proc)
    ranks = _rank_pids(run_dir)
    assert sorted(ranks) == [0, 1]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == ExitCode.STOPPED, proc.stderr.read()
    assert _rank_pids(run_dir) == {}
    assert read_status(run_dir)["state"] == "stopped"
    # The stop went to rank 1 through ssh, by the pid its script printed.
    assert ["mac2", f"kill -INT {ranks[1]}"] in [c[1:] for c in _ssh_calls(tmp_path)]
    ckpt = RunFolder(run_dir).latest_checkpoint()
    stopped_at = json.loads((ckpt / "state.json").read_text())["step"]

    # The resume finds the hostfile in the run's config; mac2 gets the checkpoint at the same
    # path; both ranks take the resume's --set (config.toml does not hold it).
    done = _run(tmp_path, "--resume", str(run_dir), "--set", f"training.iters={stopped_at + 2}")
    assert done.returncode == 0, done.stderr
    assert read_status(run_dir)["state"] == "completed" and read_status(run_dir)["world_size"] == 2
    assert train_steps(run_dir) == list(range(1, stopped_at + 3))
    assert any(c[1] == "mac2" and c[2].startswith(f"mkdir -p {ckpt.parent} && tar -xf -") for c in _ssh_calls(tmp_path))


@pytest.mark.parametrize(("hosts", "args", "line"), [
    ([{"ssh": "mac1", "ips": ["10.0.0.1"]}, {"ssh": "localhost", "ips": ["127.0.0.1"]}], [],
     "{f}: host 0 (mac1) is not this machine: rank 0 writes the run folder, so start orpo-train on mac1 "
     "(or list this machine first)"),
    ([{"ssh": "localhost", "ips": ["127.0.0.1"]}, {"ssh": "mac2"}], [],
     '{f}: host 1 (mac2): no "ips": the ring backend connects over IP addresses (mlx.distributed_config writes them)'),
    (HERE_AND_MAC2, ["--np", "4"], "--np 4 and --hostfile {f} (2 ranks) disagree; give one of them"),
    (HERE_AND_MAC2, ["--set", "training.batch_size=3"],
     "training.batch_size = 3 does not divide evenly across 2 ranks; choose a multiple of 2"),
])
def test_a_hostfile_that_cannot_start_is_refused_in_one_line_before_any_run_folder(tmp_path, hosts, args, line):
    hostfile = _hostfile(tmp_path, hosts)
    done = _run(tmp_path, str(DEMO), "--runs-dir", str(tmp_path / "runs"), "--hostfile", str(hostfile), *args)
    assert done.returncode == ExitCode.BAD_INPUT
    assert done.stderr.strip().splitlines() == ["orpo-train: " + line.format(f=hostfile)]
    assert not (tmp_path / "runs").exists() and _ssh_calls(tmp_path) == []


def test_jaccl_needs_a_hostfile(tmp_path):
    done = _run(tmp_path, str(DEMO), "--runs-dir", str(tmp_path / "runs"), "--np", "2", "--backend", "jaccl")
    assert done.returncode == ExitCode.BAD_INPUT
    assert done.stderr.strip().splitlines()[-1] == (
        "orpo-train: --backend jaccl: JACCL connects Macs over Thunderbolt; give the hosts with --hostfile")


def test_a_dead_rank_over_ssh_fails_the_run_naming_it_and_its_host(tmp_path):
    hostfile = _hostfile(tmp_path, HERE_AND_MAC2)
    proc = subprocess.Popen([*ORPO_TRAIN, str(DEMO), "--runs-dir", str(tmp_path), "--hostfile", str(hostfile), *LONG],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(tmp_path))
    run_dir = first_line(proc)
    wait_for_step(run_dir, 1, proc)
    os.kill(_rank_pids(run_dir)[1], signal.SIGKILL)
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
    assert status["error"].startswith("rank 1 on mac2 was killed or lost its ssh connection (ssh exit 255): ")
    assert _rank_pids(run_dir) == {}


def test_np_over_a_presets_hostfile_keeps_the_run_on_this_machine_for_its_resume(tmp_path):
    hostfile = _hostfile(tmp_path, HERE_AND_MAC2)
    done = _run(tmp_path, str(DEMO), "--runs-dir", str(tmp_path), "--set", f"distributed.hostfile={hostfile}",
                "--np", "1", *SMALL, "--set", "training.iters=1")
    assert done.returncode == 0, done.stderr
    run_dir = Path(done.stdout.splitlines()[0])
    assert read_status(run_dir)["world_size"] == 1 and _ssh_calls(tmp_path) == []
    assert load_preset(RunFolder(run_dir).config).distributed.hostfile == ""
