"""What the screens would do the first time they open, done while the app waits for a key.

The first opening of a screen class imports its module (the monitor's brings plotext, a few
hundred milliseconds) and reads its stylesheet, after which Textual parses the whole app's
CSS again and restyles every widget of every screen: all of it paid between a key press and
the screen's first paint. Done once while idle, after the first screen has shown, the key
press pays only for the screen itself."""

from __future__ import annotations

import asyncio
import gc
import inspect
from pathlib import Path
from types import SimpleNamespace

from textual.app import App
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widget import Widget


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


def widget_classes() -> list[type[Widget]]:
    """Every widget class imported so far (the screens' modules import what they mount)."""
    found, todo = [], [Widget]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def default_css(widget: type[Widget]) -> list:
    """The DEFAULT_CSS sources Textual adds when the first `widget` mounts, as (location,
    css, tie breaker, scope). Textual reads them from an instance; only its class counts."""
    return DOMNode._get_default_css(SimpleNamespace(_node_bases=widget._css_bases(widget)))


def read_default_css(app: App) -> bool:
    """The widget classes' DEFAULT_CSS into the app's stylesheet; whether any was new. Textual
    adds a class's CSS when its first widget mounts, then parses the whole stylesheet again:
    six times while the editor opened, for its inputs, selects, switches and footer keys."""
    stylesheet, added = app.stylesheet, False
    for widget in widget_classes():
        for read_from, css, tie_breaker, scope in default_css(widget):
            added = added or not stylesheet.has_source(*read_from)
            stylesheet.add_source(css, read_from=read_from, is_default_css=True, tie_breaker=tie_breaker, scope=scope)
    return added


def read_stylesheets(app: App, screens: list[type[Screen]]) -> None:
    """The screens' stylesheets and their widgets' default CSS into the app's, with one
    parse and one restyle for all."""
    new = [p for s in screens for p in css_paths(s) if not app.stylesheet.has_source(str(p), "")]
    if read_default_css(app) or new:
        for path in new:
            app.stylesheet.read(path)
        # parse, not reparse (which Textual uses): reparse parses into a new stylesheet and
        # keeps none of its per-source cache, so the next widget class mounted for the first
        # time (a chart, a progress bar) would have every source parsed again.
        app.stylesheet.parse()
        app.stylesheet.update(app)


def freeze_long_lived() -> None:
    """Keep what exists now out of the garbage collector's full passes. By now the process
    holds ~80k objects that live as long as it does (modules, classes, the app, its first
    screen), and opening a screen allocates enough to start a full pass over all of them:
    50-100 ms of the editor's open. Garbage is collected first, so none is kept for good;
    frozen objects are still freed by reference counting."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """When the app ends: what was frozen can be collected again (a process that runs apps
    one after another, as the tests do, would otherwise keep every app's cycles)."""
    gc.unfreeze()


async def warm_up(app: App) -> None:
    """The imports in a thread (the app keeps answering keys meanwhile), then the stylesheets,
    then the long-lived objects out of the collector's way."""
    screens = await asyncio.to_thread(screens_opened_by_a_key)
    read_stylesheets(app, screens)
    freeze_long_lived()
