"""Hostfiles (trainer.pure.hostfile) and the host checks' lines (trainer.pure.host_checks).

The files are mlx.launch's: the same file must mean the same ranks, addresses and RDMA
devices to us as to MLX's own launcher, which is asked directly (its launch functions run
with the process start replaced by a recorder).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.pure.host_checks import Answer, Expected, answer_from, probe_argv, problem_lines
from trainer.pure.hostfile import (
    RING_FIRST_PORT,
    Host,
    HostfileError,
    check_for_backend,
    init_backend,
    is_local,
    jaccl_setup,
    launch_backend,
    mpi_hostfile_text,
    parse_hostfile,
    read_hostfile,
    remote_script,
    ring_addresses,
)

THREE_MACS = {
    "backend": "jaccl",
    "envs": ["MLX_METAL_FAST_SYNCH=1"],
    "hosts": [
        {"ssh": "mac1", "ips": ["10.0.0.1", "10.0.1.1"], "rdma": [None, "rdma_en2", "rdma_en3"]},
        {"ssh": "mac2", "ips": ["10.0.0.2"], "rdma": ["rdma_en2", None, "rdma_en3"]},
        {"ssh": "mac3", "ips": ["10.0.0.3"], "rdma": ["rdma_en2", "rdma_en3", None]},
    ],
}


def write(tmp_path: Path, data, name="hosts.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def mlx_launch_sees(path: Path, backend: str, monkeypatch) -> dict:
    """What mlx.launch would start for `path` on `backend`: per rank, (host, env, files)."""
    import mlx._distributed_utils.launch as L
    from mlx._distributed_utils.common import Hostfile as MlxHostfile

    started = {}

    def record(_cls, arguments, _verbose):
        for (rank, host, _python, _cwd, files, env, _command), _kw in arguments:
            started[rank] = (host, list(env), dict(files))

    monkeypatch.setattr(L, "_launch_with_io", record)
    hosts = MlxHostfile.from_file(str(path))
    args = type("Args", (), {"starting_port": RING_FIRST_PORT, "connections_per_ip": 1, "env": list(hosts.envs),
                             "verbose": False, "cwd": None, "python": None, "backend": backend})()
    launcher = L.launch_ring if backend == "ring" else L.launch_jaccl
    launcher(None, hosts.hosts, args, ["python", "-m", "trainer"])
    return started


def test_a_hostfile_reads_as_mlx_launch_reads_it(tmp_path, monkeypatch):
    path = write(tmp_path, THREE_MACS)
    ours = read_hostfile(path)
    assert [h.ssh for h in ours.hosts] == ["mac1", "mac2", "mac3"]
    assert ours.backend == "jaccl" and ours.envs == ("MLX_METAL_FAST_SYNCH=1",)

    # The ring's addresses: the same ip:port for every rank as mlx.launch gives.
    ring = mlx_launch_sees(path, "ring", monkeypatch)
    assert ring_addresses([h.ips for h in ours.hosts], itertools.count(RING_FIRST_PORT)) == ring[0][2]["MLX_HOSTFILE"]
    assert [ring[r][0] for r in range(3)] == ["mac1", "mac2", "mac3"]

    # JACCL: the coordinator and the RDMA device matrix.
    jaccl = mlx_launch_sees(path, "jaccl", monkeypatch)
    env, files = jaccl_setup(ours, "jaccl")
    assert f"MLX_JACCL_COORDINATOR={env['MLX_JACCL_COORDINATOR']}" in jaccl[0][1]
    assert json.loads(files["MLX_IBV_DEVICES"]) == json.loads(jaccl[0][2]["MLX_IBV_DEVICES"])
    assert init_backend("jaccl-ring") == "jaccl" and jaccl_setup(ours, "jaccl-ring")[0]["MLX_JACCL_RING"] == "1"

    # The list form (no backend, no envs) is a hostfile too.
    bare = read_hostfile(write(tmp_path, [{"ssh": "a", "ips": ["10.0.0.1"]}, {"ssh": "b"}], "bare.json"))
    assert bare.hosts == (Host("a", ("10.0.0.1",)), Host("b")) and bare.backend == ""


@pytest.mark.parametrize(("text", "problem"), [
    ("{not json", "hosts.json: not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    ('{"backend": "ring"}', 'hosts.json: no "hosts" list'),
    ("[]", "hosts.json: lists no hosts"),
    ('"mac1"', 'hosts.json: must be a list of hosts or an object with a "hosts" list, not str'),
    ('[{"ssh": "mac1"}, "mac2"]', "hosts.json: host 1: must be an object"),
    ('[{"ips": ["10.0.0.1"]}]', 'hosts.json: host 0: "ssh": must name the host to ssh into'),
    ('[{"ssh": "mac1", "ips": ["mac1.local"]}]', "hosts.json: host 0 (mac1): \"ips\": 'mac1.local' is not an IP address"),
    ('[{"ssh": "mac1", "rdma": [3]}]', 'hosts.json: host 0 (mac1): "rdma": must be a list of RDMA device names or nulls'),
    ('{"backend": "tcp", "hosts": [{"ssh": "mac1"}]}', "hosts.json: \"backend\": 'tcp' is not one of ring, mpi, jaccl, jaccl-ring"),
    ('{"envs": ["NOEQUALS"], "hosts": [{"ssh": "mac1"}]}', 'hosts.json: "envs": must be a list of "NAME=VALUE" strings'),
])
def test_a_bad_hostfile_is_one_line_naming_the_file(text, problem):
    with pytest.raises(HostfileError) as err:
        parse_hostfile(text, "hosts.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith(problem)


def test_a_missing_hostfile_is_named(tmp_path):
    with pytest.raises(HostfileError, match=r"nope\.json: no such hostfile$"):
        read_hostfile(tmp_path / "nope.json")


def test_what_each_backend_needs_from_the_file():
    two = parse_hostfile('[{"ssh": "mac1", "ips": ["10.0.0.1"]}, {"ssh": "mac2"}]', "h.json")
    assert check_for_backend(two, "ring") == [
        'h.json: host 1 (mac2): no "ips": the ring backend connects over IP addresses (mlx.distributed_config writes them)']
    assert check_for_backend(two, "mpi") == []
    assert check_for_backend(parse_hostfile('[{"ssh": "mac1"}]', "one.json"), "ring") == []  # one rank needs no ring
    assert check_for_backend(two, "jaccl") == [
        'h.json: host 0 (mac1): "rdma" lists 0 devices; JACCL needs one per host (2), null for itself',
        'h.json: host 1 (mac2): "rdma" lists 0 devices; JACCL needs one per host (2), null for itself']
    gap = parse_hostfile(json.dumps({"hosts": [dict(h, rdma=r) for h, r in zip(THREE_MACS["hosts"], (
        [None, "rdma_en2", None], ["rdma_en2", None, "rdma_en3"], ["rdma_en2", "rdma_en3", None]))]}), "g.json")
    assert check_for_backend(gap, "jaccl") == ["g.json: host 0 (mac1): no RDMA device to host 2 (mac3)"]

    # The backend: one asked for by name, else the file's, else ring.
    assert launch_backend(two, "auto") == "ring" and launch_backend(two, "mpi") == "mpi"
    assert launch_backend(parse_hostfile(json.dumps(THREE_MACS), "x"), "auto") == "jaccl"
    assert mpi_hostfile_text(parse_hostfile('[{"ssh": "a"}, {"ssh": "b"}, {"ssh": "a"}]', "m")) == "a slots=2\nb slots=1\n"


def test_which_names_are_this_machine():
    assert is_local("127.0.0.1", set()) and is_local("127.0.1.1", set()) and is_local("localhost", set())
    assert is_local("::1", set()) and is_local("box", {"box", "10.1.2.3"}) and is_local("10.1.2.3", {"10.1.2.3"})
    assert not is_local("mac2", {"box"}) and not is_local("10.0.0.2", {"10.1.2.3"})


def test_the_remote_script_prints_its_pid_then_becomes_the_command_with_its_environment_and_files(tmp_path):
    show = "import os, sys; print(os.getpid(), os.getcwd(), os.environ['MLX_RANK'], open(os.environ['MLX_HOSTFILE']).read(), sys.argv[1])"
    script = remote_script(str(tmp_path), {"MLX_RANK": "1"}, {"MLX_HOSTFILE": '[["10.0.0.1:32323"]] it\'s'},
                           [sys.executable, "-c", show, "a b"])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, cwd="/").stdout.splitlines()
    pid_line, shown = out
    assert shown.split(" ", 1)[0] == pid_line  # it exec'd: the pid it printed is the command's
    assert shown.split(" ", 1)[1] == f"{tmp_path} 1 [[\"10.0.0.1:32323\"]] it's a b"


def test_problem_lines_name_the_host_and_what_is_wrong():
    hf = parse_hostfile('[{"ssh": "mac1"}, {"ssh": "mac2"}, {"ssh": "mac3"}, {"ssh": "mac2"}, {"ssh": "mac4"}]', "h.json")
    expected = Expected("/opt/py/bin/python", {"mlx": "0.32.4", "mlx-lm": "0.32.2"},
                        {"model.path": "/models/qwen", "data.path": "/data/pairs.jsonl"}, batch_size=6)
    good = {"versions": {"mlx": "0.32.4", "mlx-lm": "0.32.2"}, "trainer": True,
            "paths": {"/models/qwen": True, "/data/pairs.jsonl": True}}
    answers = {
        "mac1": Answer(report=good),
        "mac2": Answer(report={**good, "versions": {"mlx": "0.30.0", "mlx-lm": None},
                               "paths": {"/models/qwen": False, "/data/pairs.jsonl": True}}),
        "mac3": answer_from(255, "", "ssh: connect to host mac3 port 22: Connection refused\n", "/opt/py/bin/python", True),
        "mac4": answer_from(127, "", "bash: line 1: /opt/py/bin/python: No such file or directory\n", "/opt/py/bin/python", True),
    }
    assert problem_lines(hf, answers, expected) == [
        "h.json: training.batch_size = 6 does not divide evenly across the 5 hosts' ranks; choose a multiple of 5",
        "h.json: host 1 (mac2): mlx 0.30.0 there, 0.32.4 here (every rank must run the same version)",
        "h.json: host 1 (mac2): mlx-lm is not installed for /opt/py/bin/python (0.32.2 here)",
        "h.json: host 1 (mac2): model.path /models/qwen is missing there (every rank reads it at the same path)",
        "h.json: host 2 (mac3): not reachable over ssh in batch mode: ssh: connect to host mac3 port 22: Connection "
        "refused (passwordless ssh with a key is needed)",
        "h.json: host 4 (mac4): no python at /opt/py/bin/python (every host needs the same python path)",
    ]
    assert problem_lines(hf, {n: Answer(report=good) for n in ("mac1", "mac2", "mac3", "mac4")},
                         Expected("/opt/py/bin/python", good["versions"], {}, batch_size=5)) == []
    no_trainer = problem_lines(parse_hostfile('[{"ssh": "mac1"}]', "h.json"), {"mac1": Answer(report={**good, "trainer": False})},
                               Expected("/p", good["versions"]))
    assert no_trainer == ["h.json: host 0 (mac1): /p cannot import orpo-tui's trainer (install the same checkout at the same path)"]


def test_the_probe_answers_for_this_python(tmp_path):
    here = tmp_path / "present"
    here.touch()
    done = subprocess.run(probe_argv(sys.executable, [str(here), str(tmp_path / "absent")]), capture_output=True, text=True)
    answer = answer_from(done.returncode, done.stdout, done.stderr, sys.executable, via_ssh=False)
    from importlib import metadata

    assert answer.error is None
    assert answer.report["versions"] == {"mlx": metadata.version("mlx"), "mlx-lm": metadata.version("mlx-lm")}
    assert answer.report["paths"] == {str(here): True, str(tmp_path / "absent"): False}
    assert answer.report["trainer"] is True
