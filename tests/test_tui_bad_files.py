"""No file the app reads can take it down, and no failed write loses what the user typed.
Each case below crashed the app (or lost an edit) before; each now shows one line."""

import errno

import pytest
from pilot_waits import wait_until
from textual.widgets import DataTable, Input, TextArea
from trainer_helpers import REPO

from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import write_status
from tui import presets_store
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.notes import NotesScreen
from tui.screens.preset_editor import PresetEditorScreen
from tui.screens.runs import RunsScreen
from tui.screens.text_editor import TextEditorScreen


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def screen_text(app) -> str:
    return "\n".join(str(w.render()) for w in app.screen.query("Static"))


def a_run(runs, name="20260101-000000-demo", status=None, **files) -> RunFolder:
    run = RunFolder(runs / name)
    run.root.mkdir(parents=True)
    (REPO / "presets" / "demo.toml").read_text()
    run.config.write_text((REPO / "presets" / "demo.toml").read_text())
    if status is None:
        write_status(run.root, state="stopped", step=3, total_steps=10, started_at=1.0, ended_at=2.0)
    else:
        run.status.write_bytes(status)
    for attr, content in files.items():
        path = getattr(run, attr)
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
    return run


def no_space(path, *_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


async def open_runs(pilot, app, rows=1):
    await pilot.press("f3")
    await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen)
                     and app.screen.query_one(DataTable).row_count == rows, 10, "the runs list")


@pytest.mark.parametrize("status, files, reason", [
    (b'{"state": "stopped", "step": 3, "total_steps": "x"}', {}, 'total_steps = "x" is not valid'),
    (b'{"state": "stopped", "step": 3, "total_steps": Infinity}', {}, "total_steps = inf is not valid"),
    (b"", {}, "status.json is empty"),
    (b'{"state": "runn', {}, "status.json is not valid JSON"),
    (None, {"metrics": None}, "metrics.jsonl: cannot be read"),  # a directory where the file should be
])
async def test_a_damaged_run_is_listed_and_its_monitor_opens_with_the_reason(tmp_path, status, files, reason):
    runs = tmp_path / "runs"
    run = a_run(runs, status=status, **files)
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot, app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10, "the monitor")
        await pilot.pause(0.5)
        assert reason in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen) and run.root.is_dir()


async def test_notes_that_are_not_utf8_open(tmp_path):
    runs = tmp_path / "runs"
    a_run(runs, notes=b"good \xff\xfe bytes\n")
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot, app)
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, NotesScreen), 10, "the notes")
        assert app.screen.query_one(TextArea).text.startswith("good \ufffd\ufffd bytes")


async def test_compare_with_a_run_without_config_is_a_notice(tmp_path):
    runs = tmp_path / "runs"
    a_run(runs, "20260101-000000-a")
    b = a_run(runs, "20260101-000001-b")
    b.config.unlink()
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot, app, rows=2)
        await pilot.press("space", "down", "space", "c")
        await pilot.pause(0.5)
        assert any("config.toml" in n for n in notices(app)), notices(app)


async def test_broken_presets_are_listed_not_fatal(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (presets / "folder.toml").mkdir()
    (presets / "latin1.toml").write_bytes(b"description = \"caf\xe9\"\n")
    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 3, 10, "three presets")
        # Open the non-UTF-8 one as text: the way offered to repair it.
        await pilot.press("tab")
        for _ in range(3):
            if "latin1" in str(table.get_row_at(table.cursor_row)[0]):
                break
            await pilot.press("down")
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, TextEditorScreen), 10, "the text editor")
        assert "caf\ufffd" in app.screen.query_one(TextArea).text


async def test_a_new_preset_with_a_300_character_name_is_refused_in_one_line(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("tab", "n")
        await pilot.pause(0.3)
        app.screen.query_one(Input).value = "x" * 300
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert any("too long" in n for n in notices(app)), notices(app)
        assert list(presets.iterdir()) == []
        assert app.screen.query_one(Input).value == "x" * 300  # asked again, with what was typed


async def test_a_save_on_a_full_disk_keeps_the_edit(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "demo.toml").write_text((REPO / "presets" / "demo.toml").read_text())
    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("tab", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PresetEditorScreen), 10, "the editor")
        editor = app.screen
        from trainer.pure.config import replace_value

        editor.working = replace_value(editor.working, "orpo.beta", 0.3)
        monkeypatch.setattr(presets_store, "atomic_write_text", no_space)
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        assert any("No space left on device" in n for n in notices(app)), notices(app)
        assert isinstance(app.screen, PresetEditorScreen) and editor.working.orpo.beta == 0.3 and editor.dirty


@pytest.mark.parametrize("key", ["t", "n", "d"])
async def test_writes_in_the_runs_list_on_a_full_disk_are_one_line(tmp_path, monkeypatch, key):
    from trainer.pure import runs as runs_module
    from tui import run_notes

    runs = tmp_path / "runs"
    run = a_run(runs)
    monkeypatch.setattr(run_notes, "atomic_write_text", no_space)
    monkeypatch.setattr(run_notes, "atomic_write_json", no_space)

    def rename_fails(self, target):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot, app)
        monkeypatch.setattr(type(run.root), "rename", rename_fails)
        await pilot.press(key)
        await pilot.pause(0.3)
        if key == "t":
            app.screen.query_one(Input).value = "good"
            await pilot.press("enter")
        elif key == "n":
            app.screen.query_one(TextArea).text = "typed notes"
            await pilot.press("ctrl+s")
        else:
            app.screen.dismiss("delete")
        await pilot.pause(0.3)
        said = notices(app)
        assert any("No space left on device" in n or "Read-only file system" in n for n in said), said
        if key == "n":
            assert isinstance(app.screen, NotesScreen) and app.screen.query_one(TextArea).text == "typed notes"
        if key == "t":  # the dialog is back with what was typed
            assert app.screen.query_one(Input).value == "good"
        assert run.root.is_dir()
    del runs_module


@pytest.mark.parametrize("choice", ["merge", "reload"])
async def test_a_save_after_another_editor_saved_asks_and_never_reverts_it(tmp_path, choice):
    from trainer.pure.config import load_preset, replace_value

    presets = tmp_path / "presets"
    presets.mkdir()
    path = presets / "demo.toml"
    path.write_text("# my notes on this preset\n" + (REPO / "presets" / "demo.toml").read_text())
    app = make_app(presets, tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("tab", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PresetEditorScreen), 10, "the editor")
        editor = app.screen
        editor.working = replace_value(editor.working, "finetune.rank", 4)  # B's own edit
        # Editor A (another app) saves beta while B is open.
        other = presets_store.load_entry(path)
        presets_store.save_changes(other, replace_value(other.config, "orpo.beta", 0.2))
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        from tui.widgets.confirm import Confirm

        assert isinstance(app.screen, Confirm)
        assert any("changed on disk since you opened it" in str(w.render()) for w in app.screen.query("Static, Label"))
        app.screen.dismiss(choice)
        await pilot.pause(0.5)
        saved = load_preset(path)
        assert saved.orpo.beta == 0.2  # A's change survives either way
        if choice == "merge":
            assert saved.finetune.rank == 4 and not editor.dirty
        else:
            assert saved.finetune.rank != 4 and editor.working.orpo.beta == 0.2 and not editor.dirty
        assert path.read_text().startswith("# my notes on this preset\n")


async def test_saving_without_own_changes_keeps_what_another_editor_saved(tmp_path):
    from trainer.pure.config import load_preset, replace_value

    presets = tmp_path / "presets"
    presets.mkdir()
    path = presets / "demo.toml"
    path.write_text((REPO / "presets" / "demo.toml").read_text())
    stale = presets_store.load_entry(path)
    fresh = presets_store.load_entry(path)
    presets_store.save_changes(fresh, replace_value(fresh.config, "orpo.beta", 0.2))
    presets_store.save_changes(stale, stale.config)  # B saves with nothing of its own
    assert load_preset(path).orpo.beta == 0.2


async def test_a_damaged_queue_is_shown_never_overwritten_and_can_be_set_aside(tmp_path):
    from tui.screens.queue import QueueScreen

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "queue.json").write_bytes(b'{"v": 1, "items": [{"id": "a", "sta')
    app = make_app(tmp_path, runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen), 10, "the queue")
        assert "queue.json is not valid JSON" in screen_text(app)
        await pilot.press("p", "g", "X")
        await pilot.pause(0.3)
        assert (runs / "queue.json").read_bytes() == b'{"v": 1, "items": [{"id": "a", "sta'
        assert any("nothing was changed" in n for n in notices(app)), notices(app)
        await pilot.press("a")
        await pilot.pause(0.3)
        assert not (runs / "queue.json").exists()
        assert [p.name for p in runs.glob("queue.json.damaged-*")]
        assert "not valid JSON" not in screen_text(app)
