"""The preset list and editor, driven through Textual's Pilot on real preset files."""

import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import tomllib
from pilot_waits import wait_for_form, wait_until
from textual import events
from textual.widgets import DataTable, Input, Static

from trainer.pure.config import replace_value
from trainer.pure.runs import TRASH_DIR
from tui import presets_store as store
from tui.app import make_app
from tui.screens.preset_editor import PresetEditorScreen
from tui.screens.preset_list import PresetListScreen
from tui.screens.text_editor import TextEditorScreen

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def presets(tmp_path):
    folder = tmp_path / "presets"
    folder.mkdir()
    shutil.copy(REPO / "presets" / "demo.toml", folder / "demo.toml")
    (folder / "dora.toml").write_text('description = "DoRA at rank 16"\n[finetune]\ntype = "dora"\nrank = 16\n')
    (folder / "broken.toml").write_text("[training]\niters = = 3\n")
    return folder


def app_for(presets):
    return make_app(presets, presets.parent / "runs")


def table_names(app) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def type_into(pilot, widget_id: str, text: str) -> None:
    field = pilot.app.screen.query_one(f"#{widget_id}", Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)
    await pilot.pause()


def field_error(app, path: str) -> str:
    row = next(r for r in app.screen.query("FieldRow") if r.spec.path == path)
    return row.error_text


async def test_list_shows_presets_with_summary_and_broken_file(presets):
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        assert isinstance(app.screen, PresetListScreen)
        assert table_names(app) == ["⚠ broken", "demo", "dora"]
        table = app.screen.query_one(DataTable)
        dora = table.get_row_at(2)
        assert list(map(str, dora[1:5])) == ["builtin:tiny", "builtin:demo", "dora", "0.1"]
        assert "does not load" in str(table.get_row_at(0)[5])
        assert "invalid TOML" in str(app.screen.query_one("#detail", Static).render())
        await pilot.press("d", "o", "r")  # typing filters straight away
        assert app.screen.query_one("#filter", Input).value == "dor"
        assert table_names(app) == ["dora"]
        await pilot.press("escape")
        assert len(table_names(app)) == 3


async def test_edit_beta_and_rank_with_validation_then_save(presets):
    before_text = (presets / "demo.toml").read_text()
    before = tomllib.loads(before_text)
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "enter")
        assert isinstance(app.screen, PresetEditorScreen)
        editor = await wait_for_form(pilot)

        await type_into(pilot, "f-orpo--beta", "-0.5")
        assert "must be" in field_error(app, "orpo.beta")
        await type_into(pilot, "f-finetune--rank", "abc")
        assert field_error(app, "finetune.rank")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert (presets / "demo.toml").read_text() == before_text  # errors block saving

        await type_into(pilot, "f-orpo--beta", "0.25")
        await type_into(pilot, "f-finetune--rank", "16")
        assert field_error(app, "orpo.beta") == "" and field_error(app, "finetune.rank") == ""
        assert editor.dirty
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not editor.dirty

    after = tomllib.loads((presets / "demo.toml").read_text())
    expected = json.loads(json.dumps(before))
    expected["orpo"]["beta"] = 0.25
    expected["finetune"]["rank"] = 16
    assert after == expected  # the two new values and nothing else
    assert (presets / "demo.toml").read_text().startswith("# The built-in demo")  # header kept


async def test_cross_field_rule_is_shown_next_to_the_field(presets):
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "enter")
        await wait_for_form(pilot)
        await type_into(pilot, "f-training--warmup_steps", "500")
        assert "less than training.iters" in field_error(app, "training.warmup_steps")
        assert "training.warmup_steps" in str(app.screen.query_one("#problems", Static).render())


async def test_the_form_has_the_distributed_section_and_its_batch_rule(presets):
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "enter")
        await wait_for_form(pilot)
        paths = {r.spec.path for r in app.screen.query("FieldRow")}
        assert {"distributed.np", "distributed.hostfile", "distributed.backend"} <= paths
        await type_into(pilot, "f-distributed--np", "3")  # the demo's batch is 8 pairs
        assert "multiple of distributed.np (3)" in field_error(app, "training.batch_size")


async def test_leaving_with_unsaved_changes_asks(presets):
    original = (presets / "demo.toml").read_text()
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "enter")
        await wait_for_form(pilot)
        await type_into(pilot, "f-orpo--beta", "0.3")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.query_one(".title").render()  # the confirm dialog
        await pilot.click("#cancel")
        await pilot.pause()
        assert isinstance(app.screen, PresetEditorScreen)  # still editing, nothing lost
        await pilot.press("ctrl+q")  # quitting asks too
        await pilot.pause()
        await pilot.click("#discard")
        await pilot.pause()
    assert (presets / "demo.toml").read_text() == original


async def test_broken_preset_opens_as_text_and_can_be_fixed(presets):
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("enter")  # the broken file is first
        assert isinstance(app.screen, TextEditorScreen)
        status = str(app.screen.query_one("#status", Static).render())
        assert "broken.toml" in status and "line 2" in status
        area = app.screen.query_one("TextArea")
        area.text = "[training]\niters = 3\n"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "valid preset" in str(app.screen.query_one("#status", Static).render())
        await pilot.press("escape")
        await pilot.pause()
        assert "broken" in table_names(app)  # no longer flagged
    assert tomllib.loads((presets / "broken.toml").read_text()) == {"training": {"iters": 3}}


async def test_clone_rename_delete_from_the_list(presets):
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"dora", "tab", "c")
        await pilot.pause()
        app.screen.query_one("#name", Input).value = "dora-r32"
        await pilot.press("enter")
        await pilot.pause()
        assert (presets / "dora-r32.toml").read_text() == (presets / "dora.toml").read_text()
        await pilot.press("d")
        await pilot.pause()
        await pilot.click("#delete")
        await pilot.pause()
    remaining = sorted(p.name for p in presets.glob("*.toml"))
    trashed = [p.name for p in (presets / TRASH_DIR).iterdir()]
    assert len(remaining) == 3 and len(trashed) == 1


async def test_show_command_for_a_preset(presets):
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "tab", "x")
        await pilot.pause()
        command = app.screen.query_one("#command", Input).value
        assert command == f"orpo-train {presets / 'demo.toml'} --runs-dir {presets.parent / 'runs'}"


def test_merge_changes_touches_only_changed_keys():
    from trainer.pure.config import config_from_dict, replace_value

    raw = {"description": "x", "training": {"iters": 10}}
    before = config_from_dict(raw, "t")
    after = replace_value(replace_value(before, "orpo.beta", 0.5), "finetune.keys", ("self_attn.q_proj",))
    assert store.merge_changes(raw, before, after) == {
        "description": "x", "training": {"iters": 10}, "orpo": {"beta": 0.5}, "finetune": {"keys": ["self_attn.q_proj"]}}
    assert raw == {"description": "x", "training": {"iters": 10}}  # the input is not modified


def test_store_refuses_bad_names_and_overwrites(presets):
    entry = store.load_entry(presets / "demo.toml")
    with pytest.raises(store.PresetFileError):
        store.clone(entry, "dora")
    with pytest.raises(store.PresetFileError):
        store.preset_path(presets, "../escape")


def test_importing_the_app_loads_no_mlx():
    code = ("import sys, json, tui.app, tui.cli\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'datasets'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_store_file_errors_are_one_line_and_symlinks_are_written_through(tmp_path, monkeypatch):
    import errno

    from trainer.pure.config import replace_value

    folder = tmp_path / "presets"
    folder.mkdir()
    with pytest.raises(store.PresetFileError, match="too long"):
        store.create(folder, "x" * 300)
    real = store.create(folder, "real", "the real one")
    link = folder / "link.toml"
    link.symlink_to(real)
    entry = store.load_entry(link)
    store.save_changes(entry, replace_value(entry.config, "orpo.beta", 0.3))
    assert link.is_symlink() and "beta = 0.3" in real.read_text()

    def read_only(path, text):  # tests may run as root, which a chmod does not stop
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(store, "atomic_write_text", read_only)
    with pytest.raises(store.PresetFileError, match=r"real.toml: Permission denied"):
        store.save_changes(store.load_entry(real), replace_value(entry.config, "orpo.beta", 0.4))


async def test_keys_typed_at_once_after_tab_all_reach_the_next_field(presets):
    """A terminal delivers Tab, End, ctrl+u, 0.2 in one read. Pilot.press waits for the app
    between keys, so the keys are posted here all at once, as the terminal driver does."""
    app = app_for(presets)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*"demo", "enter")
        await pilot.pause()
        description = app.screen.query_one("#f-description", Input)
        # Focused once laid out (the editor focuses it after its first refresh).
        await wait_until(pilot, lambda: app.focused is not None, 30, "the editor's first focus")
        assert app.focused is description
        for key, char in [("tab", "\t"), ("end", None), ("ctrl+u", None), ("0", "0"), ("full_stop", "."), ("2", "2")]:
            app.post_message(events.Key(key, char))
        await pilot.pause()
        assert app.focused.id == "f-model--path"
        assert app.focused.value == "0.2"
        assert description.value == store.load_entry(presets / "demo.toml").config.description


COMMENTED = """\
# My preset: header comment
description = "commented"  # trailing comment on a value

[training]
# a comment between keys
learning_rate = 1e-3   # spelled the way I like it
iters = 150

batch_size = 4 # odd order: batch after iters

[orpo]
beta = 0.1
# a comment at the end of a table

[model]
path = "builtin:tiny"
"""


def test_saving_an_edit_changes_only_that_key_byte_for_byte(tmp_path):
    path = tmp_path / "commented.toml"
    path.write_text(COMMENTED)
    entry = store.load_entry(path)
    store.save_changes(entry, replace_value(entry.config, "orpo.beta", 0.25))
    assert path.read_text() == COMMENTED.replace("beta = 0.1", "beta = 0.25")

    # A key the file did not have goes into its table; a table it did not have is added.
    entry = store.load_entry(path)
    cfg = replace_value(replace_value(entry.config, "training.warmup_steps", 10), "model.quantize.bits", 4)
    store.save_changes(entry, cfg)
    text = path.read_text()
    assert text.startswith(COMMENTED.replace("beta = 0.1", "beta = 0.25").split("[orpo]")[0].replace(
        "batch_size = 4 # odd order: batch after iters\n", "batch_size = 4 # odd order: batch after iters\nwarmup_steps = 10\n"))
    assert store.load_entry(path).config == cfg
    assert "learning_rate = 1e-3   # spelled the way I like it" in text


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_editor_opens_with_the_rows_in_view_and_restyles_the_form_once(presets, size, monkeypatch):
    """Opening the editor used to take 1-3 s: its ~250 widgets were all mounted before the
    first paint, then restyled as a whole four times (screen resume, the breakpoint class,
    the focus given to the form's scroll container and taken back). Now the first paint has
    the rows that fill the view, the whole screen is restyled once, and the rest follows."""
    from textual.app import App

    from tui.screens.preset_editor import grouped_fields

    whole_restyles = []
    update_styles = App.update_styles

    def counting(self, node, animate=True):
        if isinstance(self.screen, PresetEditorScreen) and node.query("FieldRow"):
            whole_restyles.append(type(node).__name__)
        update_styles(self, node, animate)

    composed = []
    on_mount = PresetEditorScreen.on_mount

    def counting_rows(self):
        composed.append(len(self.query("FieldRow")))
        on_mount(self)

    monkeypatch.setattr(App, "update_styles", counting)
    monkeypatch.setattr(PresetEditorScreen, "on_mount", counting_rows)
    app = app_for(presets)
    async with app.run_test(size=size) as pilot:
        await pilot.press(*"demo", "enter")
        assert 0 < composed[0] < size[1] // 2
        await wait_for_form(pilot)
        await pilot.pause()
        rows = [r.spec.path for r in app.screen.query("FieldRow")]
        assert rows == [s.path for _, specs in grouped_fields() for s in specs]
        assert app.focused.id == "f-description"
    assert len(whole_restyles) <= 1, whole_restyles


async def test_reserved_key_is_read_only_with_its_reason(presets):
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "enter")
        await wait_for_form(pilot)
        field = app.screen.query_one("#f-orpo--reward_scaling", Input)
        assert field.disabled and not field.focusable
        row = next(r for r in app.screen.query("FieldRow") if r.spec.path == "orpo.reward_scaling")
        note = str(row.query_one(".note", Static).render())
        assert note.startswith("read-only, reserved: ") and "no effect yet" in note
        app.screen.query_one("#f-orpo--beta", Input).focus()
        await pilot.press("tab")
        assert app.focused.id != "f-orpo--reward_scaling"


def laid_out(editor) -> bool:
    """Every row's key has its height (1, unless it wraps)."""
    return all(row.query_one(".key").size.height for row in editor.query("FieldRow"))


async def test_keys_never_wrap_mid_name(presets):
    """`training.grad_accumulation_steps` used to break as `..._ste` / `ps` over two lines."""
    for size in [(80, 24), (160, 48)]:
        app = app_for(presets)
        async with app.run_test(size=size) as pilot:
            await pilot.press(*"demo", "enter")
            await wait_for_form(pilot)
            await wait_until(pilot, partial(laid_out, app.screen), 30, "the form's layout")
            for row in app.screen.query("FieldRow"):
                key = row.query_one(".key")
                shown = "".join(s.text for s in key.render_line(0)).strip()
                assert key.size.height == 1, (size, row.spec.path)
                assert shown == row.spec.path or (shown.endswith("…") and row.spec.path.startswith(shown[:-1])), (size, shown)


def _pairs_file(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(rows)))
    return path


async def test_derived_rows_are_dropped_when_data_path_changes_then_recounted(presets, tmp_path, monkeypatch):
    """The implied epochs used to keep the first file's row count after data.path changed."""
    import threading

    from tui.screens import preset_editor

    small = _pairs_file(tmp_path / "small" / "train.jsonl", 40).parent
    _pairs_file(small / "valid.jsonl", 4)
    big = _pairs_file(tmp_path / "big" / "train.jsonl", 300).parent
    _pairs_file(big / "valid.jsonl", 4)
    (presets / "local.toml").write_text(f'[data]\npath = "{small}"\n')
    release = threading.Event()
    count = preset_editor.count_train_rows

    def slow_count(cfg):  # the worker thread waits until the test has looked
        if cfg.data.path == str(big):
            release.wait(10)
        return count(cfg)

    monkeypatch.setattr(preset_editor, "count_train_rows", slow_count)
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"local", "enter")
        await wait_for_form(pilot)
        derived = app.screen.query_one("#derived", Static)
        assert "over 40 train rows" in str(derived.render())
        await type_into(pilot, "f-data--path", str(big))
        assert "40 train rows" not in str(derived.render())
        assert "counting the train rows" in str(derived.render())
        release.set()
        # Counted in a worker thread: wait for the count, not a fixed time.
        await wait_until(pilot, lambda: "counting the train rows" not in str(derived.render()), 60, "the new count")
        assert "over 300 train rows" in str(derived.render())


async def test_hub_ids_not_in_the_local_cache_are_named_before_the_run(presets, tmp_path, monkeypatch):
    """A hub model or dataset that is not downloaded used to read "None: ready to save and
    run", and the run failed offline. Judged from the cache folder only, never the network."""
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    (presets / "hub.toml").write_text('[model]\npath = "some-org/some-model"\n[data]\npath = "some-org/some-pairs"\n')
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"hub", "enter")
        await wait_for_form(pilot)
        problems = str(app.screen.query_one("#problems", Static).render())
        assert "ready to save" not in problems
        assert "hub model 'some-org/some-model' is not in the local Hugging Face cache" in problems
        assert "huggingface-cli download some-org/some-model" in problems and "point model.path at a local" in problems
        assert "huggingface-cli download some-org/some-pairs --repo-type dataset" in problems
        assert not app.screen.errors  # a warning: the preset still saves

    (hf_home / "hub" / "models--some-org--some-model" / "snapshots" / "abc").mkdir(parents=True)
    (hf_home / "hub" / "datasets--some-org--some-pairs" / "snapshots" / "abc").mkdir(parents=True)
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"hub", "enter")
        await wait_for_form(pilot)
        assert "None: ready to save and run." in str(app.screen.query_one("#problems", Static).render())


async def test_find_a_field_by_name_or_help_and_from_the_palette(presets):
    app = app_for(presets)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*"demo", "enter")
        screen = await wait_for_form(pilot)

        def shown():
            return [r.spec.path for r in screen.query("FieldRow") if r.display]

        await pilot.press("ctrl+f", *"accum")
        await pilot.pause()
        assert shown() == ["training.grad_accumulation_steps"]
        assert [g.render().plain for g in screen.query(".group") if g.display] == ["Training"]
        await pilot.press("ctrl+u", *"dispreferred")  # words of the help text match too
        await pilot.pause()
        assert shown() == ["data.rejected_feature"]
        await pilot.press("enter")
        assert app.focused.id == "f-data--rejected_feature"
        await pilot.press("ctrl+f", "escape")
        await pilot.pause()
        assert len(shown()) == len(list(screen.query("FieldRow"))) > 40
        assert not screen.query_one("#find").display

        jump = next(c for c in screen.commands() if c.title == "Field training.iters")
        jump.callback()
        await pilot.pause(0.2)
        assert app.focused.id == "f-training--iters"
        assert isinstance(app.screen, PresetEditorScreen) and not screen.dirty


async def test_memory_verdict_is_live_in_the_form_and_real_after_the_data_check(presets, monkeypatch):
    """The form says whether the run fits this machine (a 100 MB device here, through the
    trainer's test hook): the worst case at max_seq_length as the fields change, labelled,
    and the figure at the data's real lengths once the data check has run for this config."""
    from trainer.pure.system_memory import DEVICE_MEMORY_ENV

    monkeypatch.setenv(DEVICE_MEMORY_ENV, "0.1")
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "enter")
        editor = await wait_for_form(pilot)

        def derived() -> dict[str, str]:
            text = str(editor.query_one("#derived", Static).render())
            return dict(line.split(": ", 1) for line in text.splitlines())

        worst = derived()
        assert worst["Memory (worst)"].startswith("≈ ") and "worst case at max_seq_length, every pair 256 tokens" in worst["Memory (worst)"]
        assert worst["Fits?"].startswith("does not fit: est ") and "worst case at max_seq_length, more than the 100.0 MB" in worst["Fits?"]

        await type_into(pilot, "f-data--max_seq_length", "32")
        assert derived()["Fits?"].startswith("fits: est ") and "of 100.0 MB" in derived()["Fits?"]

        await type_into(pilot, "f-data--max_seq_length", "256")
        await pilot.press("ctrl+b")  # the data check: a trainer subprocess tokenizes the data
        # The check's report replaces "Not run yet."/"checking…": a subprocess that imports
        # mlx can take many seconds on a loaded machine.
        await wait_until(pilot, lambda: not str(editor.query_one("#preflight", Static).render()).startswith("Checking"),
                         180, "the data check")
        real = derived()
        assert real["Memory (est.)"].endswith("at the data's real lengths (from the data check)")
        assert real["Fits?"].startswith("fits: est ") and "at the data's real lengths of 100.0 MB" in real["Fits?"]
        assert "memory: fits: est " in str(editor.query_one("#preflight", Static).render())

        await type_into(pilot, "f-training--batch_size", "4")  # another config: the check no longer holds
        assert "Memory (est.)" not in derived() and "worst case" in derived()["Fits?"]


async def test_the_data_check_checks_the_hosts_of_a_hostfile_and_shows_one_line_per_problem(presets, monkeypatch, tmp_path):
    """With distributed.hostfile set, the form's data check runs the host checks too (here a
    stand-in ssh on PATH: mac2 answers, mac3 cannot be reached)."""
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "localhost", "ips": ["127.0.0.1"]}, {"ssh": "mac2", "ips": ["127.0.0.1"]},
                                    {"ssh": "mac3", "ips": ["127.0.0.1"]}, {"ssh": "localhost", "ips": ["127.0.0.1"]}]))
    monkeypatch.setenv("PATH", f"{REPO / 'tests' / 'fake_ssh'}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_DOWN", "mac3")
    app = app_for(presets)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(*"demo", "enter")
        editor = await wait_for_form(pilot)
        await type_into(pilot, "f-distributed--hostfile", str(hostfile))
        await pilot.press("ctrl+b")

        def shown() -> str:
            return str(editor.query_one("#preflight", Static).render())

        await wait_until(pilot, lambda: "host problem:" in shown() or "hosts:" in shown(), 180, "the data and host checks")
        problems = [ln for ln in shown().splitlines() if ln.startswith("host problem:")]
        assert problems == [f"host problem: {hostfile}: host 2 (mac3): not reachable over ssh in batch mode: ssh: connect "
                            "to host mac3 port 22: Connection refused (passwordless ssh with a key is needed)"]
        assert "train: " in shown()  # the data report is still there, after the host problems
        assert shown().index("host problem:") < shown().index("source:")

        monkeypatch.setenv("FAKE_SSH_DOWN", "")
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: "hosts:" in shown(), 180, "the second host check")
        assert "hosts: every host of the hostfile is ready" in shown() and "host problem:" not in shown()
