"""Where presets and runs live: a checkout's folders, else the user's platform folders; the
settings file and flags win; the demo is seeded once into an installed tool's presets folder;
`orpo-train` without --runs-dir puts a run where the app lists runs.

tests/test_installed_tool.py does the same end to end with a real non-editable install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.pure import app_folders
from trainer.pure.app_folders import Folders, SettingsError, checkout_root, resolve_folders, user_folders
from tui.settings import SEED_DIR, seed_user_presets

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty HOME with no XDG variables, and this code seen as an installed copy."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(app_folders, "SOURCE_ROOT", tmp_path / "site-packages")
    return home


def test_linux_folders_follow_xdg_with_its_defaults(home, monkeypatch):
    assert user_folders("linux") == Folders(home / ".config/orpo-tui/presets", home / ".local/share/orpo-tui/runs")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/x/config")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # invalid by the XDG spec: ignored
    assert user_folders("linux") == Folders(Path("/x/config/orpo-tui/presets"), home / ".local/share/orpo-tui/runs")


def test_macos_folders_are_in_application_support_unless_xdg_is_set(home, monkeypatch):
    support = home / "Library" / "Application Support" / "orpo-tui"
    assert user_folders("darwin") == Folders(support / "presets", support / "runs")
    monkeypatch.setenv("XDG_DATA_HOME", "/x/data")
    assert user_folders("darwin") == Folders(support / "presets", Path("/x/data/orpo-tui/runs"))


def test_a_checkout_is_this_projects_pyproject_beside_the_packages(tmp_path):
    assert checkout_root() == REPO
    assert checkout_root(tmp_path) is None  # site-packages: no pyproject.toml
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    assert checkout_root(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text("[project\n")
    assert checkout_root(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "orpo-tui"\n')
    assert checkout_root(tmp_path) == tmp_path


def test_defaults_are_the_checkouts_folders_in_a_checkout_and_the_users_when_installed(home, monkeypatch):
    settings = home / "no-settings.toml"
    assert resolve_folders(None, None, settings) == user_folders()
    monkeypatch.setattr(app_folders, "SOURCE_ROOT", REPO)
    assert resolve_folders(None, None, settings) == Folders(REPO / "presets", REPO / "runs")


def test_flags_then_the_settings_file_win_over_the_defaults(home, tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text(f'presets_dir = "{tmp_path}/p"\nruns_dir = "~/r"\n')
    assert resolve_folders(None, None, settings) == Folders(tmp_path / "p", home / "r")
    assert resolve_folders(str(tmp_path / "flag"), None, settings) == Folders(tmp_path / "flag", home / "r")
    settings.write_text("runs_dir = 3\n")
    with pytest.raises(SettingsError, match=r"settings\.toml: runs_dir must be a string"):
        resolve_folders(None, None, settings)
    settings.write_text("runs_dir = \n")
    with pytest.raises(SettingsError, match=r"settings\.toml"):
        resolve_folders(None, None, settings)


def test_the_shipped_demo_is_the_repos_demo():
    link = SEED_DIR / "demo.toml"
    assert link.is_symlink() and link.resolve() == (REPO / "presets" / "demo.toml").resolve()


def test_the_demo_is_seeded_once_into_the_users_own_presets_folder_only(home, tmp_path):
    folder = user_folders().presets
    assert seed_user_presets(folder) == [folder / "demo.toml"]
    assert (folder / "demo.toml").read_bytes() == (REPO / "presets" / "demo.toml").read_bytes()
    # Deleted by the user: the folder exists, so it stays deleted.
    (folder / "demo.toml").unlink()
    assert seed_user_presets(folder) == [] and list(folder.iterdir()) == []
    # A folder from a flag or the settings file is never seeded.
    assert seed_user_presets(tmp_path / "mine") == [] and not (tmp_path / "mine").exists()


def test_seeding_never_overwrites_a_file_written_meanwhile(home, tmp_path, monkeypatch):
    folder = user_folders().presets
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "demo.toml").write_text("shipped")
    (seed / "other.toml").write_text("shipped")
    original_mkdir = Path.mkdir

    def mkdir_then_user_writes(self, *args, **kwargs):  # the user's file lands between check and copy
        original_mkdir(self, *args, **kwargs)
        (self / "demo.toml").write_text("mine")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "mkdir", mkdir_then_user_writes)
        assert seed_user_presets(folder, seed) == [folder / "other.toml"]
    assert (folder / "demo.toml").read_text() == "mine"


def _start_run(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """A real `orpo-train` on a preset whose data is missing: it makes its run folder, prints
    it and fails (exit 2) before loading anything, which is all where-does-it-go needs."""
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("runs_dir_line", ["", 'runs_dir = "runs"'])
def test_orpo_train_without_runs_dir_uses_the_apps_runs_folder(tmp_path, runs_dir_line):
    config = tmp_path / "config"
    (config / "orpo-tui").mkdir(parents=True)
    (config / "orpo-tui" / "settings.toml").write_text(f'runs_dir = "{tmp_path}/app-runs"\n')
    preset = tmp_path / "p.toml"
    preset.write_text(f'[data]\npath = "{tmp_path}/missing"\n[output]\n{runs_dir_line}\n')
    env = {**_env(), "XDG_CONFIG_HOME": str(config)}
    proc = _start_run(tmp_path, env, str(preset))
    assert proc.returncode == 2 and "missing" in proc.stderr, proc.stderr
    assert Path(proc.stdout.splitlines()[0]).parent == tmp_path / "app-runs"
    # --runs-dir still wins.
    proc = _start_run(tmp_path, env, str(preset), "--runs-dir", str(tmp_path / "flag"))
    assert Path(proc.stdout.splitlines()[0]).parent == tmp_path / "flag"


def test_orpo_train_keeps_a_preset_runs_dir_as_written(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text(f'[data]\npath = "{tmp_path}/missing"\n[output]\nruns_dir = "mine"\n')
    proc = _start_run(tmp_path, {**_env(), "XDG_CONFIG_HOME": str(tmp_path / "config")}, str(preset))
    assert (tmp_path / Path(proc.stdout.splitlines()[0])).parent == tmp_path / "mine"


def test_orpo_train_names_an_unreadable_settings_file(tmp_path):
    (tmp_path / "orpo-tui").mkdir()
    (tmp_path / "orpo-tui" / "settings.toml").write_text("runs_dir = [\n")
    preset = tmp_path / "p.toml"
    preset.write_text('[model]\npath = "builtin:tiny"\n')
    proc = _start_run(tmp_path, {**_env(), "XDG_CONFIG_HOME": str(tmp_path)}, str(preset))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"orpo-train: {tmp_path}/orpo-tui/settings.toml: ") and proc.stderr.count("\n") == 1


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}
