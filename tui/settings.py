"""Where the app finds presets and runs: command-line flags, then the app's settings file
(`~/.config/orpo-tui/settings.toml` with `presets_dir` / `runs_dir`), then the repo's folders;
and how it tells the user that a run ended (`notify_terminal`; trainer/pure/user_settings.py).

The file is named settings.toml so that "config.toml" means one thing in this project: the
resolved config in a run folder."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from trainer.pure.user_settings import NotifySettings, notify_settings, read_user_settings, user_settings_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def user_config_path() -> Path:
    # The trainer reads the same file (its notify_command): one definition of where it is.
    return user_settings_path()


@dataclass(frozen=True)
class Folders:
    presets: Path
    runs: Path


def resolve_folders(presets: str | None, runs: str | None, config_file: Path | None = None) -> Folders:
    saved: dict = {}
    path = config_file or user_config_path()
    if path.is_file():
        try:
            saved = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise SystemExit(f"orpo-tui: {path}: {exc}") from None

    def pick(flag: str | None, key: str, default: Path) -> Path:
        value = flag or saved.get(key)
        return Path(value).expanduser().resolve() if value else default

    return Folders(pick(presets, "presets_dir", REPO / "presets"), pick(runs, "runs_dir", REPO / "runs"))


def load_notify(config_file: Path | None = None) -> tuple[NotifySettings, list[str]]:
    """The notification settings, and the lines to show for keys that are wrong."""
    saved, problem = read_user_settings(config_file)
    settings, problems = notify_settings(saved, config_file)
    return settings, ([problem] if problem else []) + problems
