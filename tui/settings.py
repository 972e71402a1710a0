"""Where the app finds presets and runs: command-line flags, then the app's settings file
(`~/.config/orpo-tui/settings.toml` with `presets_dir` / `runs_dir`), then the repo's folders.

The file is named settings.toml so that "config.toml" means one thing in this project: the
resolved config in a run folder."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orpo-tui" / "settings.toml"


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
