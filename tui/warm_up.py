"""What the screens would do the first time they open, done while the app waits for a key.

The first opening of a screen class imports its module (the monitor's brings plotext, a few
hundred milliseconds) and reads its stylesheet, after which Textual parses the whole app's
CSS again and restyles every widget of every screen: all of it paid between a key press and
the screen's first paint. Done once while idle, after the first screen has shown, the key
press pays only for the screen itself."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

from textual.app import App
from textual.screen import Screen


def css_paths(screen: type[Screen]) -> list[Path]:
    """A screen class's CSS_PATH files, resolved as Textual resolves them (next to its module)."""
    paths = screen.CSS_PATH if isinstance(screen.CSS_PATH, list) else [screen.CSS_PATH] if screen.CSS_PATH else []
    return [(Path(inspect.getfile(screen)).parent / path).resolve() for path in paths]


def screens_opened_by_a_key() -> list[type[Screen]]:
    """The screens a single key opens from a list: the editor (enter on a preset), the run
    monitor (enter on a run; a started run) and the runs list (F3; a started run)."""
    from tui.screens.monitor import MonitorScreen
    from tui.screens.preset_editor import PresetEditorScreen
    from tui.screens.runs import RunsScreen

    return [PresetEditorScreen, MonitorScreen, RunsScreen]


def read_stylesheets(app: App, screens: list[type[Screen]]) -> None:
    """The screens' stylesheets into the app's, with one parse and one restyle for all."""
    new = [p for s in screens for p in css_paths(s) if not app.stylesheet.has_source(str(p), "")]
    if new:
        for path in new:
            app.stylesheet.read(path)
        # parse, not reparse (which Textual uses): reparse parses into a new stylesheet and
        # keeps none of its per-source cache, so the next widget class mounted for the first
        # time (a chart, a progress bar) would have every source parsed again.
        app.stylesheet.parse()
        app.stylesheet.update(app)


async def warm_up(app: App) -> None:
    """The imports in a thread (the app keeps answering keys meanwhile), then the stylesheets."""
    screens = await asyncio.to_thread(screens_opened_by_a_key)
    read_stylesheets(app, screens)
