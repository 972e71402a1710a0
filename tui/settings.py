"""The app's folders: resolved as trainer.pure.app_folders says (flags, then the settings
file, then the checkout's folders or, for an installed tool, the user's), the demo
preset seeded into the user's presets folder the first time the app starts there, and how
the app tells the user that a run ended (`notify_terminal`; trainer/pure/user_settings.py).

The demo is shipped in the package as `tui/seed/demo.toml`, a link in the repository to
`presets/demo.toml` that wheel and sdist builds turn into a copy."""

from __future__ import annotations

from pathlib import Path

from trainer.pure.app_folders import Folders, SettingsError, resolve_folders, user_folders
from trainer.pure.user_settings import NotifySettings, notify_settings, read_user_settings

SEED_DIR = Path(__file__).resolve().parent / "seed"


def app_folders(presets: str | None, runs: str | None) -> Folders:
    """The folders for the command line, or exit with one line naming the settings file."""
    try:
        return resolve_folders(presets, runs)
    except SettingsError as exc:
        raise SystemExit(f"orpo-tui: {exc}") from None


def seed_user_presets(folder: Path, seed_dir: Path = SEED_DIR) -> list[Path]:
    """First start with the user's own presets folder: create it holding the shipped presets.

    Only the installed tool's default folder is seeded (a checkout has its presets, and a
    folder named by a flag or the settings file is the user's business), and only when it
    does not exist yet: a demo the user deleted or edited stays that way. No file is ever
    overwritten, even one written between the check and the copy. Returns the files written."""
    if folder != user_folders().presets or folder.exists():
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(seed_dir.glob("*.toml")):
        target = folder / source.name
        try:
            with open(target, "xb") as out:
                out.write(source.read_bytes())
        except FileExistsError:
            continue
        written.append(target)
    return written


def load_notify(config_file: Path | None = None) -> tuple[NotifySettings, list[str]]:
    """The notification settings, and the lines to show for keys that are wrong."""
    saved, problem = read_user_settings(config_file)
    settings, problems = notify_settings(saved, config_file)
    return settings, ([problem] if problem else []) + problems
