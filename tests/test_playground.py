"""The playground's plumbing without servers: the server-sent events it reads, the settings it
takes, the playground.jsonl it writes and reads back (damaged lines cost only themselves), and
how a server that cannot start is reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tui.playground import (
    ServeError,
    ServerProcess,
    Settings,
    completion_request,
    parse_settings,
    playground_entry,
    read_entries,
    save_entry,
    served_argv,
    shown_text,
    sse_pieces,
)

REPO = Path(__file__).resolve().parents[1]


def events(*lines: str) -> list[bytes]:
    return [(line + "\n").encode() for line in lines]


def chunk(content: str | None = None, text: str | None = None) -> str:
    choice = {"index": 0, "finish_reason": None}
    if content is not None:
        choice["delta"] = {"role": "assistant", "content": content}
    if text is not None:
        choice["text"] = text
    return "data: " + json.dumps({"object": "chunk", "choices": [choice]})


def test_sse_pieces_are_the_deltas_in_order_and_stop_at_done():
    stream = events(": keepalive 1/11", "", chunk("Hel"), "", chunk("lo"), chunk(None), "data: [DONE]", chunk("after"))
    assert list(sse_pieces(stream)) == ["Hel", "lo"]


def test_sse_pieces_of_a_plain_completion_are_its_text():
    assert list(sse_pieces(events(chunk(text="Gr"), chunk(text="een"), chunk(text=""), "data: [DONE]"))) == ["Gr", "een"]


def test_an_error_event_or_a_line_that_is_not_json_is_one_error():
    with pytest.raises(ServeError, match="^model not loaded$"):
        list(sse_pieces(events(chunk("a"), 'data: {"error": {"message": "model not loaded"}}')))
    with pytest.raises(ServeError, match="not JSON: {oops"):
        list(sse_pieces(events("data: {oops")))


def test_the_request_follows_how_the_run_saw_its_prompts():
    settings = Settings(temperature=0.2, top_p=0.9, max_tokens=5, seed=7)
    endpoint, body = completion_request("Hi", settings, chat=True)
    assert endpoint == "/chat/completions" and body["messages"] == [{"role": "user", "content": "Hi"}]
    endpoint, body = completion_request("Hi", settings, chat=False)
    assert endpoint == "/completions" and body["prompt"] == "Hi"
    assert {k: body[k] for k in ("stream", "temperature", "top_p", "max_tokens", "seed")} == {
        "stream": True, "temperature": 0.2, "top_p": 0.9, "max_tokens": 5, "seed": 7}


def test_settings_are_parsed_and_a_bad_one_is_named():
    texts = {"temperature": "0", "top_p": "0.5", "max_tokens": "64", "seed": "3"}
    assert parse_settings(texts) == Settings(0.0, 0.5, 64, 3)
    with pytest.raises(ValueError, match="^max_tokens: '6.5' is not a whole number$"):
        parse_settings({**texts, "max_tokens": "6.5"})
    with pytest.raises(ValueError, match="^temperature: -1 is not between 0.0 and 5.0$"):
        parse_settings({**texts, "temperature": "-1"})


def test_served_choices_become_the_serve_flags(tmp_path):
    # The app holds each server's stdin: a server ends with the app, even after a SIGKILL.
    assert served_argv(tmp_path, "final")[-5:] == ["serve", str(tmp_path), "--port", "0", "--until-stdin-closes"]
    for served in ("best", "fused", "base"):
        assert f"--{served}" in served_argv(tmp_path, served)
    with pytest.raises(ValueError):
        served_argv(tmp_path, "latest")


def test_saved_entries_read_back_and_damaged_lines_are_skipped_with_a_note(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    entry = playground_entry("Hi", Settings(), [{"column": "A", "run": "a", "served": "final", "answer": "Hello"}])
    assert save_entry([a, b, a], entry) == []  # each run once
    with (a / "playground.jsonl").open("a") as f:
        f.write('{"prompt": "cut off\n[1, 2]\n{"prompt": "no answers"}\n\n')
    assert save_entry([a], entry) == []
    entries, notes = read_entries(a)
    assert entries == [entry, entry]
    assert notes == [f"playground.jsonl: line {n}: not a saved exchange, skipped" for n in (2, 3, 4)]
    assert read_entries(b) == ([entry], [])
    assert read_entries(tmp_path / "none") == ([], [])


def test_a_run_that_cannot_be_written_is_named_and_the_others_are_written(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    (bad / "playground.jsonl").mkdir(parents=True)
    problems = save_entry([bad, good], playground_entry("Hi", Settings(), []))
    assert problems == [f"{bad / 'playground.jsonl'}: Is a directory"]
    assert len((good / "playground.jsonl").read_text().splitlines()) == 1


def test_a_server_that_exits_before_its_url_gives_its_last_stderr_line():
    script = "import sys; print('loading', file=sys.stderr); print('orpo-train serve: port 1 is in use', file=sys.stderr); sys.exit(2)"
    server = ServerProcess([sys.executable, "-c", script])
    with pytest.raises(ServeError, match="^port 1 is in use$"):
        server.start(timeout=30)
    assert server.proc.returncode == 2


def test_a_server_command_that_cannot_run_is_one_error(tmp_path):
    with pytest.raises(ServeError, match="no-such-python: No such file or directory$"):
        ServerProcess([str(tmp_path / "no-such-python"), "-m", "trainer"]).start(timeout=5)


def test_a_server_that_says_nothing_in_time_is_stopped():
    server = ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(ServeError, match="no URL from the server within 1s"):
        server.start(timeout=1)
    assert server.proc.returncode is not None


def test_control_characters_a_model_says_are_shown_harmlessly():
    assert shown_text("a\x11b\nc\td\x1b[31m\x9bé") == "a\ufffdb\nc\td\ufffd[31m\ufffdé"


@pytest.mark.parametrize("hangup", ["SIGHUP", "SIGTERM"])
def test_a_hangup_stops_the_servers_before_it_ends_the_app(hangup):
    """A lost SSH link ends the app without its exit handlers; its servers, in sessions of
    their own, get no SIGHUP from the terminal. A stand-in server (it prints a URL, then
    waits) is enough: what is tested is that its process group goes."""
    script = (
        "import sys, time\n"
        "from tui.playground import ServerProcess, stop_servers_on_hangup\n"
        "stop_servers_on_hangup()\n"
        "server = ServerProcess([sys.executable, '-c', \"print('http://127.0.0.1:1/v1', flush=True); import time; time.sleep(120)\"])\n"
        "server.start(timeout=60)\n"
        "print(server.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    pid = int(app.stdout.readline())
    assert group_alive(pid)
    app.send_signal(getattr(signal, hangup))
    assert app.wait(timeout=30) == -getattr(signal, hangup)  # the signal still ends the app as before
    assert not group_alive(pid), "the server outlived the app"


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True
