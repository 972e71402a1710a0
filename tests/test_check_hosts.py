"""`orpo-train check-hosts`: the real command, with this machine's hosts probed here and the
others through a stand-in `ssh` on PATH (tests/fake_ssh/ssh: every host is this machine,
and a host can be made unreachable)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tests.trainer_helpers import DEMO, REPO
from trainer.pure.trainer_process import ExitCode, check_hosts_argv

FAKE_SSH = REPO / "tests" / "fake_ssh"


def check(tmp_path, hosts, *args, down=""):
    path = tmp_path / "hosts.json"
    path.write_text(hosts if isinstance(hosts, str) else json.dumps(hosts))
    log = tmp_path / "ssh.log"
    env = {**os.environ, "PATH": f"{FAKE_SSH}{os.pathsep}{os.environ['PATH']}", "FAKE_SSH_LOG": str(log),
           "FAKE_SSH_DOWN": down}
    argv = check_hosts_argv(path) + list(args)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    return done, (log.read_text() if log.exists() else "")


def test_this_machine_under_any_of_its_names_is_checked_without_ssh(tmp_path):
    hosts = [{"ssh": name, "ips": ["127.0.0.1"]} for name in ("127.0.0.1", "localhost", socket.gethostname())]
    done, ssh_log = check(tmp_path, hosts, "--preset", str(DEMO), "--set", "training.batch_size=6")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"{tmp_path / 'hosts.json'}: 3 rank(s) on 3 host(s) ready: python {sys.executable}, mlx ")
    assert ssh_log == ""


def test_other_hosts_go_through_ssh_in_batch_mode_and_each_problem_is_one_line(tmp_path):
    hosts = [{"ssh": name, "ips": ["127.0.0.1"]} for name in ("localhost", "mac2", "mac3", "mac2")]
    done, ssh_log = check(tmp_path, hosts, "--preset", str(DEMO), "--set", "training.batch_size=6", down="mac3")
    assert done.returncode == ExitCode.HOSTS_NOT_READY
    name = tmp_path / "hosts.json"
    assert done.stdout.splitlines() == [
        f"{name}: training.batch_size = 6 does not divide evenly across the 4 hosts' ranks; choose a multiple of 4",
        f"{name}: host 2 (mac3): not reachable over ssh in batch mode: ssh: connect to host mac3 port 22: "
        "Connection refused (passwordless ssh with a key is needed)",
    ]
    # mac2 (listed twice) was asked once, mac3 once, both without a password prompt and with a timeout.
    asked = [ln.split("\t") for ln in ssh_log.splitlines() if ln.count("\t") >= 2]
    assert sorted(a[1] for a in asked) == ["mac2", "mac3"]
    assert all("-o BatchMode=yes" in a[0] and "-o ConnectTimeout=" in a[0] for a in asked)


def test_a_data_file_the_preset_names_is_looked_for_on_every_host(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n" for i in range(8)))
    preset = tmp_path / "exp.toml"
    preset.write_text(DEMO.read_text().replace('path = "builtin:demo"', f'path = "{data}"'))
    assert f'path = "{data}"' in preset.read_text()
    two = [{"ssh": "localhost", "ips": ["127.0.0.1"]}, {"ssh": "mac2", "ips": ["127.0.0.1"]}]
    done, ssh_log = check(tmp_path, two, "--preset", str(preset))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert str(data) in ssh_log  # mac2 was asked about the file (the stand-in host has it)

    data.unlink()  # gone: every host, this one included, lacks it
    done, _ = check(tmp_path, two, "--preset", str(preset))
    assert done.returncode == ExitCode.HOSTS_NOT_READY
    assert done.stdout.splitlines() == [
        f"{tmp_path / 'hosts.json'}: host {i} ({name}): data.path {data} is missing there (every rank reads it at the "
        "same path)" for i, name in enumerate(("localhost", "mac2"))]


def test_what_would_stop_the_launch_is_reported_too(tmp_path):
    done, ssh_log = check(tmp_path, [{"ssh": "mac1", "ips": ["127.0.0.1"]}, {"ssh": "localhost"}])
    assert done.returncode == ExitCode.HOSTS_NOT_READY
    name = tmp_path / "hosts.json"
    assert done.stdout.splitlines() == [
        f"{name}: host 0 (mac1) is not this machine: rank 0 writes the run folder, so start orpo-train on mac1 "
        "(or list this machine first)",
        f'{name}: host 1 (localhost): no "ips": the ring backend connects over IP addresses (mlx.distributed_config '
        "writes them)",
    ]


def test_a_bad_hostfile_is_one_line_and_exit_2(tmp_path):
    done, ssh_log = check(tmp_path, '[{"ssh": "mac1",}]')
    assert done.returncode == ExitCode.BAD_INPUT
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"orpo-train: {tmp_path / 'hosts.json'}: not JSON: Expecting property name enclosed in double quotes "
        "at line 1 column 17"]
    assert ssh_log == ""
