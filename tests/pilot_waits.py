"""Waiting in Pilot tests for what the app does in the background (workers, timers, forms
mounted a few rows per refresh), up to a deadline that a loaded machine cannot reach by
being slow: a test waits for the state it checks, never for a fixed time."""

from __future__ import annotations

import time


async def wait_until(pilot, condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        await pilot.pause(0.05)


def form_complete(screen) -> bool:
    """Whether a preset editor has mounted its whole form (it mounts the rows in view first,
    then the rest a few per refresh)."""
    from tui.screens.preset_editor import PresetEditorScreen

    if not isinstance(screen, PresetEditorScreen) or not screen.is_mounted:
        return False
    forms = screen.query("#form")
    return bool(forms) and len(forms.first().children) == len(screen.form_items())


async def wait_for_form(pilot, timeout: float = 60.0):
    """The preset editor on top with its whole form mounted; returns the editor."""
    await wait_until(pilot, lambda: form_complete(pilot.app.screen), timeout, "the preset editor's whole form")
    return pilot.app.screen


def footer_settled(screen) -> bool:
    """Whether the screen's key footer shows the keys its bindings have now: it rebuilds a
    refresh after a focus change or a dialog, which a loaded machine may not have reached."""
    from tui.widgets.keys_footer import KeysFooter

    return all(footer._shown == footer.shown_keys() for footer in screen.query(KeysFooter))
