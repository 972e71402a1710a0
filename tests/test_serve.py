"""`orpo-train serve`: mlx-lm's server for a run, started as the playground starts it."""

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest
from trainer_helpers import DEMO, REPO, run_trainer

from trainer.fuse import base_folder
from trainer.pure.run_folder import RunFolder
from trainer.pure.serve import HOST, read_base_url, serve_argv

MAX_TOKENS = 24
PROMPT = "Give me the opposite of strong."


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    proc = run_trainer(str(DEMO), "--runs-dir", str(runs), "--set", "training.iters=20",
                       "--set", "training.steps_per_eval=10", "--set", "training.save_every=10")
    assert proc.returncode == 0, proc.stderr
    return next(runs.iterdir())


class Server:
    def __init__(self, run_dir, env=None, **kw):
        self.proc = subprocess.Popen(serve_argv(run_dir, **kw), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO, env=env)
        self.url = read_base_url(self.proc, timeout=180)
        assert self.url, f"no URL line; exit {self.proc.poll()}: {self.proc.stderr.read() if self.proc.poll() is not None else ''}"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def post(self, path: str, body: dict) -> bytes:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.read()

    def chat(self, content: str, stream: bool = False) -> str:
        body = {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": MAX_TOKENS, "stream": stream}
        raw = self.post("/chat/completions", body)
        if not stream:
            return json.loads(raw)["choices"][0]["message"]["content"]
        chunks = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)

    def complete(self, prompt: str) -> str:
        raw = self.post("/completions", {"prompt": prompt, "temperature": 0, "max_tokens": MAX_TOKENS})
        return json.loads(raw)["choices"][0]["text"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server_for(request):
    started = []

    def start(run_dir, **kw):
        started.append(Server(run_dir, **kw))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def training_prompt(tokenizer, chat_template: bool) -> list[int]:
    """PROMPT's tokens as training builds them: through the chat template when
    data.apply_chat_template is on, else as plain text."""
    from trainer.data import rows_from_records, tokenize_rows
    from trainer.pure.config_schema import DataConfig

    record = {"prompt": PROMPT, "chosen": "yes", "rejected": "no"}
    rows = rows_from_records([record], list(record), "mem", DataConfig(path="mem", apply_chat_template=chat_template))
    return list(tokenize_rows(rows, tokenizer, 1024)[0][0].prompt)


def mlx_lm_answers(run_dir, adapters):
    """What mlx_lm.generate gives, greedy, for PROMPT as a chat-templated training prompt and
    as a plain one: what /v1/chat/completions and /v1/completions must answer."""
    from mlx_lm import generate, load

    model, tokenizer = load(str(base_folder(run_dir)), adapter_path=str(adapters) if adapters else None)
    return tuple(generate(model, tokenizer, prompt=training_prompt(tokenizer, chat), max_tokens=MAX_TOKENS)
                 for chat in (True, False))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def fail_line(*args) -> tuple[int, str]:
    proc = run_trainer("serve", *map(str, args), timeout=120)
    return proc.returncode, proc.stderr.strip().splitlines()[-1]


def test_greedy_answers_equal_mlx_lm_generate_and_the_base_differs(trained_run, server_for):
    tuned = server_for(trained_run)
    assert tuned.url == f"http://{HOST}:{tuned.port}/v1"
    chat, plain = mlx_lm_answers(trained_run, RunFolder(trained_run).adapters)
    assert chat and plain
    assert tuned.chat(PROMPT) == chat
    assert tuned.chat(PROMPT, stream=True) == chat  # token by token, the same text
    assert tuned.complete(PROMPT) == plain

    base = server_for(trained_run, base=True)
    base_chat, base_plain = mlx_lm_answers(trained_run, None)
    assert base.chat(PROMPT) == base_chat
    assert base.complete(PROMPT) == base_plain
    assert (base_chat, base_plain) != (chat, plain)  # the adapters change what the model says


def test_best_adapters_and_the_fused_model_are_served(trained_run, server_for, tmp_path):
    best = server_for(trained_run, best=True)
    chat, _ = mlx_lm_answers(trained_run, RunFolder(trained_run).best)
    assert best.chat(PROMPT) == chat

    run_copy = tmp_path / "run"
    shutil.copytree(trained_run, run_copy)
    assert run_trainer("fuse", str(run_copy)).returncode == 0
    fused = server_for(run_copy, fused=True)
    from mlx_lm import generate, load

    model, tokenizer = load(str(RunFolder(run_copy).fused()))  # its own tokenizer files, template included
    expected = [generate(model, tokenizer, prompt=training_prompt(tokenizer, chat), max_tokens=MAX_TOKENS) for chat in (True, False)]
    assert [fused.chat(PROMPT), fused.complete(PROMPT)] == expected


def test_sigterm_stops_the_server_and_leaves_no_process(trained_run, server_for, tmp_path):
    # A machine that never downloaded from the hub has no hub cache, which /v1/models scans.
    s = server_for(trained_run, env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "no-hub-cache")})
    assert port_open(s.port)
    with urllib.request.urlopen(s.url + "/models", timeout=30) as resp:
        models = [m["id"] for m in json.loads(resp.read())["data"]]
    assert models == [str(Path(base_folder(trained_run)).resolve())]
    assert psutil.Process(s.proc.pid).children(recursive=True) == []  # the server runs in this one process
    assert s.stop() == 0
    assert not port_open(s.port)
    assert s.proc.stdout.read() == ""  # the URL was the only stdout line


def test_sigkill_takes_the_server_with_it(trained_run, server_for):
    s = server_for(trained_run)
    s.proc.kill()
    s.proc.wait(timeout=30)
    assert not port_open(s.port)


def test_one_line_errors(trained_run, tmp_path):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert fail_line(trained_run, "--port", port) == (2, f"orpo-train serve: port {port} is in use")

    unreadable = tmp_path / "unreadable-adapters"  # the server starts, its model load fails
    shutil.copytree(trained_run, unreadable)
    RunFolder(unreadable).adapters.joinpath("adapter_config.json").write_text('{"x":')
    code, line = fail_line(unreadable)
    assert code == 1 and line.startswith(f"orpo-train serve: {RunFolder(unreadable).adapters}: the model did not load: JSONDecodeError")

    fresh = tmp_path / "fresh-run"  # a run whose trainer has not saved adapters yet
    fresh.mkdir()
    shutil.copy(RunFolder(trained_run).config, RunFolder(fresh).config)
    code, line = fail_line(fresh)
    assert code == 2 and line == f"orpo-train serve: {fresh}: no saved adapters yet (adapters/adapters.safetensors)"
    code, line = fail_line(fresh, "--best")
    assert code == 2 and line.startswith(f"orpo-train serve: {fresh}: no best adapters (adapters/best/)")

    code, line = fail_line(trained_run, "--fused")
    assert code == 2 and line == (f"orpo-train serve: {trained_run}: no fused model (fused/); "
                                  f"run `orpo-train fuse {trained_run}` first")
    assert fail_line(trained_run, "--base", "--best") == (
        2, "orpo-train serve: --base serves the bare base: it goes with neither --best nor --fused")
    code, line = fail_line(tmp_path / "nowhere")
    assert code == 2 and line == f"orpo-train serve: {tmp_path / 'nowhere'}: no such run directory"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, line = fail_line(empty)
    assert code == 2 and line == f"orpo-train serve: {empty}: not a run directory (no config.toml)"
    broken = tmp_path / "broken"
    broken.mkdir()
    RunFolder(broken).config.write_text("[model\n")
    code, line = fail_line(broken)
    assert code == 2 and line.startswith(f"orpo-train serve: {RunFolder(broken).config}")


def test_which_endpoint_matches_training(tmp_path):
    from trainer.pure.config import apply_overrides, dump_toml, load_preset
    from trainer.pure.serve import trained_on_chat_template

    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                                 "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}]}) + "\n")
    cases = {"plain": ([], False), "wrapped": (["data.apply_chat_template=true"], True),
             "conversations": ([f"data.path={chats}"], True), "hub": (["data.path=someone/prefs"], False)}
    for name, (overrides, chat) in cases.items():
        run = tmp_path / name
        run.mkdir()
        dump_toml(apply_overrides(load_preset(DEMO), overrides), RunFolder(run).config)
        assert trained_on_chat_template(run) is chat, name
    assert trained_on_chat_template(tmp_path / "nowhere") is False
