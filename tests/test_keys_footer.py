"""The footer paints its keys with its screen's first frame, and rebuilds only when the keys it
shows change, on the screen on top: Textual paints nothing while a widget rebuilds, so every
needless footer rebuild held back the frame of the screen being opened."""

from pilot_waits import wait_until
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input

from tui.widgets.keys_footer import KeysFooter


class Form(Screen):
    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("ctrl+r", "start", "Start run")]

    def __init__(self) -> None:
        super().__init__()
        self.can_start = True

    def compose(self):
        yield Input(id="a")
        yield Input(id="b")
        yield KeysFooter(compact=True)

    def check_action(self, action, parameters):
        # None: shown, but disabled.
        return None if action == "start" and not self.can_start else True


def shown(screen) -> list[str]:
    return [key.key for key in screen.query_one(KeysFooter).children if hasattr(key, "key")]


async def test_the_keys_are_there_when_the_screen_mounts_and_focus_moves_rebuild_nothing():
    app = App()
    async with app.run_test(size=(80, 24)) as pilot:
        form = Form()
        await app.push_screen(form)  # returns once mounted, before the first paint
        assert "ctrl+s" in shown(form) and "ctrl+r" in shown(form)
        footer = form.query_one(KeysFooter)
        rebuilds = []
        recompose = footer.recompose
        footer.recompose = lambda: rebuilds.append(1) or recompose()
        for target in ("#b", "#a", "#b"):
            form.query_one(target).focus()
            await pilot.pause()
        assert rebuilds == []
        form.can_start = False  # a key the footer shows is disabled now: that is a change
        form.refresh_bindings()
        # The footer rebuilds a refresh later, which a loaded machine may not reach in one pause.
        await wait_until(pilot, lambda: rebuilds, 30, "the footer's rebuild")
        await pilot.pause()
        assert rebuilds == [1]


async def test_a_covered_screens_footer_catches_up_when_it_shows_again():
    app = App()
    async with app.run_test(size=(80, 24)) as pilot:
        form = Form()
        await app.push_screen(form)
        footer = form.query_one(KeysFooter)
        rebuilds = []
        recompose = footer.recompose
        footer.recompose = lambda: rebuilds.append(1) or recompose()
        await app.push_screen(Screen())  # covers the form
        form.can_start = False
        form.refresh_bindings()
        await pilot.pause()
        assert rebuilds == []
        app.pop_screen()
        await wait_until(pilot, lambda: rebuilds, 30, "the footer's rebuild")
        await pilot.pause()
        assert rebuilds == [1]
        start = next(key for key in footer.children if getattr(key, "key", None) == "ctrl+r")
        assert start.has_class("-disabled")
