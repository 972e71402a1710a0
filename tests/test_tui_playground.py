"""The playground against real `orpo-train serve` processes on a short demo run: answers
stream into the base and run columns piece by piece and equal what the same servers answer
without streaming; a column whose server fails or dies shows why while the other keeps
answering; saving appends playground.jsonl, which the compare screen's samples tab lists;
no server outlives the screen or the app."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pilot_waits import wait_until
from textual.widgets import Input, Static, TextArea

from tests.trainer_helpers import DEMO, REPO, run_trainer
from trainer.pure.run_folder import RunFolder
from trainer.pure.serve import trained_on_chat_template
from tui.app import make_app
from tui.playground import Settings, completion_request, live_servers, shown_text
from tui.screens.compare import CompareScreen
from tui.screens.playground import ANSWERING, DONE, ERROR, READY, STARTING, Column, PlaygroundScreen

PROMPT = "What colour is grass?"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    proc = run_trainer(str(DEMO), "--runs-dir", str(runs), "--set", "training.iters=30",
                       "--set", "training.steps_per_eval=10", "--set", "training.save_every=30")
    assert proc.returncode == 0, proc.stderr
    return next(p for p in runs.iterdir() if RunFolder(p).is_run())


# How long a server may take to end after the app or screen that started it: it exits in
# moments, but a loaded machine may take seconds.
SERVER_EXIT_S = 60


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def unstreamed(url: str, run: Path) -> str:
    """What the same server answers to the same greedy request without streaming."""
    endpoint, body = completion_request(PROMPT, Settings(temperature=0.0, max_tokens=MAX_TOKENS), trained_on_chat_template(run))
    body["stream"] = False
    request = urllib.request.Request(url + endpoint, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        choice = json.load(response)["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


async def send(pilot, screen: PlaygroundScreen) -> None:
    screen.query_one("#prompt", TextArea).text = PROMPT
    screen.query_one("#temperature", Input).value = "0"
    screen.query_one("#max_tokens", Input).value = str(MAX_TOKENS)
    await pilot.press("f5")


async def test_answers_stream_into_base_and_run_columns_and_are_saved_and_listed(demo_run, tmp_path):
    app = make_app(tmp_path / "presets", demo_run.parent)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = PlaygroundScreen(app.workspace, [demo_run])
        await app.push_screen(screen)
        base, run = screen.columns
        assert (base.served, run.served) == ("base", "final")
        assert STARTING in str(screen.query_one("#status-A", Static).render())
        await wait_until(pilot, lambda: base.state != STARTING and run.state != STARTING, 240, "both servers")
        assert (base.state, run.state) == (READY, READY), (base.error, run.error)
        servers = [base.server, run.server]
        assert all(s.url.startswith("http://127.0.0.1:") for s in servers)

        # Every piece the columns show, as they show it.
        seen = {"base": [], "A": []}
        show = screen.show
        screen.show = lambda column: (seen[column.key].append(column.text), show(column))[1]
        await send(pilot, screen)
        await wait_until(pilot, lambda: base.state == DONE and run.state == DONE, 120, "both answers")
        for column in (base, run):
            texts = [t for t in seen[column.key] if t]
            assert column.updates > 1 and len(set(texts)) > 1, f"{column.key} did not stream: {texts}"
            assert texts[-1] == column.text != ""
            assert str(screen.query_one(f"#answer-{column.key}", Static).render()) == shown_text(column.text)
            # Streamed and put together, the answer is the one the model gives in one go.
            assert column.text == unstreamed(column.server.url, demo_run)
        # Base and trained answers are as alike as the models are (read once more, unstreamed).
        assert (base.text == run.text) == (unstreamed(base.server.url, demo_run) == unstreamed(run.server.url, demo_run))

        await pilot.press("ctrl+s")
        await pilot.pause()
        lines = RunFolder(demo_run).playground.read_text().splitlines()
        assert len(lines) == 1
        saved = json.loads(lines[0])
        assert saved["prompt"] == PROMPT
        assert saved["settings"] == {"temperature": 0.0, "top_p": 0.95, "max_tokens": MAX_TOKENS, "seed": 0}
        assert [(a["column"], a["served"], a["answer"]) for a in saved["answers"]] == [
            ("base", "base", base.text), ("A", "final", run.text)]

        # The run's server dies: its column says why, the base column keeps answering.
        os.killpg(run.server.proc.pid, signal.SIGKILL)
        run.server.proc.wait()
        await send(pilot, screen)
        await wait_until(pilot, lambda: base.state == DONE and run.state == ERROR, 120, "the base answer and the error")
        assert base.text and base.updates > 1
        assert run.error == "the server was killed (SIGKILL)"
        assert str(screen.query_one("#status-A", Static).render()) == f"error: {run.error}"

        under = app.screen_stack[-2]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is under
        deadline = time.monotonic() + SERVER_EXIT_S
        while any(group_alive(s.proc.pid) for s in servers) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        assert not any(group_alive(s.proc.pid) for s in servers), "a server outlived the playground"

        # The compare screen's samples tab lists the saved exchange beside the eval samples.
        other = demo_run.parent / (demo_run.name + "-copy")
        shutil.copytree(demo_run, other, ignore=shutil.ignore_patterns("playground.jsonl", "train.lock"))
        await app.push_screen(CompareScreen(app.workspace, [demo_run, other]))
        await pilot.press("3")
        await pilot.pause()
        listed = str(app.screen.query_one("#samples-playground", Static).render())
        assert "Playground: 1 saved prompt" in listed
        assert f"» {PROMPT}" in listed
        assert f"base model: {shown_text(base.text)}" in listed and f"{demo_run.name} (final): {shown_text(run.text)}" in listed


async def test_a_column_whose_server_cannot_start_shows_why_and_the_other_answers(demo_run, tmp_path):
    no_adapters = tmp_path / "runs" / "no-adapters"
    shutil.copytree(demo_run, no_adapters, ignore=shutil.ignore_patterns("adapters", "playground.jsonl", "train.lock"))
    app = make_app(tmp_path / "presets", no_adapters.parent)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = PlaygroundScreen(app.workspace, [no_adapters])
        await app.push_screen(screen)
        base, run = screen.columns
        await wait_until(pilot, lambda: base.state != STARTING and run.state != STARTING, 240, "both servers")
        assert base.state == READY and run.state == ERROR
        assert "adapters" in run.error and "\n" not in run.error  # the server's own one line
        await send(pilot, screen)
        await wait_until(pilot, lambda: base.state == DONE, 120, "the base answer")
        assert base.text and run.state == ERROR
        pid = base.server.proc.pid
    # The app exited with the playground open: its server went with it.
    assert live_servers() == [] and not group_alive(pid)


async def test_saving_into_a_folder_that_cannot_be_written_keeps_the_answers(tmp_path):
    run = tmp_path / "runs" / "20240101-120000-demo"
    run.mkdir(parents=True)
    # A folder where the file should be: writing fails as on a read-only folder (the tests
    # run as root here, for whom a read-only mode refuses nothing).
    RunFolder(run).playground.mkdir()
    columns = [Column("base", run, "base", state=DONE, text="voc voc"), Column("A", run, "final", state=DONE, text="Green.")]
    app = make_app(tmp_path / "presets", run.parent)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = PlaygroundScreen(app.workspace, [run], columns=columns, start_servers=False)
        screen.prompt = PROMPT
        await app.push_screen(screen)
        notes = []
        app.notify = lambda message, **kw: notes.append((message, kw.get("severity")))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert notes == [(f"Not saved: {RunFolder(run).playground}: Is a directory", "error")]
        assert str(screen.query_one("#answer-A", Static).render()) == "Green."
        assert str(screen.query_one("#answer-base", Static).render()) == "voc voc"


async def test_bad_settings_send_nothing_and_say_which(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    app = make_app(tmp_path / "presets", run.parent)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = PlaygroundScreen(app.workspace, [run], columns=[Column("A", run, "final", state=READY)],
                                  start_servers=False)
        await app.push_screen(screen)
        notes = []
        app.notify = lambda message, **kw: notes.append(message)
        screen.query_one("#prompt", TextArea).text = PROMPT
        screen.query_one("#top_p", Input).value = "1.5"
        await pilot.press("f5")
        await pilot.pause()
        assert notes == ["Not sent: top_p: 1.5 is not between 0.0 and 1.0"]
        assert screen.columns[0].state == READY and screen.columns[0].state != ANSWERING


def test_servers_are_stopped_when_the_app_process_dies_of_an_error(demo_run):
    """An unhandled error ends the interpreter: its exit stops every server it started."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tui.playground import ServerProcess, served_argv\n"
        f"server = ServerProcess(served_argv(Path({str(demo_run)!r}), 'base'))\n"
        "server.start()\n"
        "print(server.proc.pid, flush=True)\n"
        "raise RuntimeError('the app crashed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "RuntimeError: the app crashed" in proc.stderr
    pid = int(proc.stdout.strip())
    deadline = time.monotonic() + SERVER_EXIT_S
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pid), "the server outlived the app"


def test_servers_end_when_the_app_process_is_killed(demo_run):
    """SIGKILL runs no exit handler: the server sees its stdin close and ends by itself."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tui.playground import ServerProcess, served_argv\n"
        f"server = ServerProcess(served_argv(Path({str(demo_run)!r}), 'base'))\n"
        "server.start()\n"
        "print(server.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        pid = int(app.stdout.readline())
        assert group_alive(pid)
    finally:
        app.kill()
        app.wait()
    deadline = time.monotonic() + SERVER_EXIT_S
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pid), "the server outlived the killed app"


async def test_p_on_the_compare_screen_opens_base_a_and_b_and_escape_goes_back_to_it(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(REPO / "tests" / "fixtures" / "runs", runs)
    a, b = runs / "20240101-120000-demo", runs / "20240101-130000-demo-2"
    app = make_app(tmp_path / "presets", runs)
    async with app.run_test(size=(80, 24)) as pilot:
        compare = CompareScreen(app.workspace, [a, b])
        await app.push_screen(compare)
        await pilot.press("p")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PlaygroundScreen)
        assert [(c.key, c.run, c.served) for c in screen.columns] == [("base", a, "base"), ("A", a, "final"), ("B", b, "final")]
        # The fixture runs hold no adapters and name no model on this machine: each column
        # shows its server's own one line.
        await wait_until(pilot, lambda: all(c.state == ERROR for c in screen.columns), 120, "the three errors")
        assert all(c.error and "\n" not in c.error for c in screen.columns), [c.error for c in screen.columns]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is compare
    assert live_servers() == []
