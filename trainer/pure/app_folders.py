"""Where presets and runs live, for the app and for `orpo-train` alike.

Each folder is, in this order: the command-line flag; the settings file
(`$XDG_CONFIG_HOME/orpo-tui/settings.toml`, else `~/.config/orpo-tui/settings.toml`, keys
`presets_dir` and `runs_dir`); else a default that depends on how the code is installed:

- run from a checkout of the repository (an editable install, or `python -m` in the clone):
  the checkout's `presets/` and `runs/`;
- installed as a package (`pipx install`, `uv tool install`, `pip install .`), where the
  code sits in site-packages and has no repository beside it: the user's folders,
  presets in the config folder and runs in the data folder, as `user_folders` lays out.

A checkout is recognised by this project's own pyproject.toml two levels above this file;
an installed copy has site-packages there instead.

The file is named settings.toml so that "config.toml" means one thing in this project: the
resolved config in a run folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from trainer.pure.user_settings import read_user_settings, user_settings_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP_NAME = "orpo-tui"
PRESETS_DIR_KEY = "presets_dir"
RUNS_DIR_KEY = "runs_dir"
PRESETS_FOLDER = "presets"
RUNS_FOLDER = "runs"

# trainer/pure/app_folders.py -> the folder holding trainer/ and tui/.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(Exception):
    """The settings file exists but cannot be read; the message names it."""


@dataclass(frozen=True)
class Folders:
    presets: Path
    runs: Path


def _xdg(variable: str, fallback: Path) -> Path:
    # The XDG spec says a relative value is invalid and to be ignored.
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else fallback


def checkout_root(root: Path | None = None) -> Path | None:
    """The repository these modules run from, or None for an installed copy."""
    root = root or SOURCE_ROOT
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    project = data.get("project")
    return root if isinstance(project, dict) and project.get("name") == APP_NAME else None


def user_folders(platform: str = sys.platform) -> Folders:
    """An installed tool's folders.

    Linux (and any other Unix): presets in `$XDG_CONFIG_HOME/orpo-tui/presets` (default
    `~/.config/orpo-tui/presets`), beside settings.toml since presets are files the user
    writes; runs in `$XDG_DATA_HOME/orpo-tui/runs` (default `~/.local/share/orpo-tui/runs`),
    since runs hold weights and grow. macOS: both in `~/Library/Application Support/orpo-tui/`,
    unless the XDG variables are set, which then win as on Linux.
    """
    home = Path.home()
    if platform == "darwin":
        mac = home / "Library" / "Application Support"
        config, data = _xdg("XDG_CONFIG_HOME", mac), _xdg("XDG_DATA_HOME", mac)
    else:
        config, data = _xdg("XDG_CONFIG_HOME", home / ".config"), _xdg("XDG_DATA_HOME", home / ".local" / "share")
    return Folders(config / APP_NAME / PRESETS_FOLDER, data / APP_NAME / RUNS_FOLDER)


def default_folders() -> Folders:
    root = checkout_root()
    if root is not None:
        return Folders(root / PRESETS_FOLDER, root / RUNS_FOLDER)
    return user_folders()


def read_settings(path: Path | None = None) -> dict:
    saved, problem = read_user_settings(path)
    if problem:
        raise SettingsError(problem)
    return saved


def resolve_folders(presets: str | None, runs: str | None, config_file: Path | None = None) -> Folders:
    """The two folders from the flags, the settings file and the defaults (see the module
    docstring). Raises SettingsError for an unreadable settings file."""
    saved = read_settings(config_file)
    defaults = default_folders()

    def pick(flag: str | None, key: str, default: Path) -> Path:
        value = flag or saved.get(key)
        if value and not isinstance(value, str):
            raise SettingsError(f"{config_file or user_settings_path()}: {key} must be a string (a folder path)")
        return Path(value).expanduser().resolve() if value else default

    return Folders(pick(presets, PRESETS_DIR_KEY, defaults.presets), pick(runs, RUNS_DIR_KEY, defaults.runs))
