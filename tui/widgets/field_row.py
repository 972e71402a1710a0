"""One config field in the preset form: its key, an input that fits its type, and a note
under them with the help text, or the error when there is one."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Input, Label, Select, Static, Switch
from textual.widgets._select import SelectCurrent

from trainer.pure.config import FieldSpec, iter_fields

__all__ = ["FieldRow", "FormInput", "widget_id", "path_of", "as_text", "describe_range"]


def widget_id(path: str) -> str:
    """The input's id for a config path; `path_of` reads it back (ids cannot hold dots)."""
    return "f-" + path.replace(".", "--")


def path_of(widget_id_: str) -> str:
    return widget_id_[2:].replace("--", ".")


def as_text(spec: FieldSpec, value) -> str:
    if spec.type is list:
        return ", ".join(value)
    if spec.type is float:
        return repr(float(value))
    return str(value)


def describe_range(spec: FieldSpec) -> str:
    parts = []
    if spec.choices:
        parts.append(" | ".join(str(c) for c in spec.choices))
    elif spec.min is not None or spec.max is not None:
        lo = "" if spec.min is None else f"{spec.min:g}{' <' if spec.min_exclusive else ' ≤'} "
        hi = "" if spec.max is None else f"{' <' if spec.max_exclusive else ' ≤'} {spec.max:g}"
        parts.append(f"{lo}x{hi}")
    for value, meaning in spec.special:
        parts.append(f"{value} = {meaning}")
    return " · ".join(parts)


class StyledOnceMixin:
    """Textual restyles a widget at once on every class change, even before it has a place in
    the DOM, where the work is thrown away: mounting styles it from scratch. The form's inputs
    set classes while they are built (compact, valid): that was a restyle each, per row."""

    def update_node_styles(self, animate: bool = True) -> None:
        if self.parent is None:
            return  # not registered yet: mounting applies the stylesheet to the final classes
        super().update_node_styles(animate)


class FormSelect(StyledOnceMixin, Select):
    """A Select whose parts are built with the classes a compact select with a value ends up
    with, so none of them is restyled on the way to the first paint."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_class("-textual-compact", update=False)

    def compose(self) -> ComposeResult:
        for part in super().compose():
            if isinstance(part, SelectCurrent):
                # Its watcher sets the class from `has_value` as it mounts (False until the
                # value's label arrives: a restyle to take the class off, one to put it back).
                part.set_reactive(SelectCurrent.has_value, True)
                part.add_class("-has-value", update=False)
            else:
                part.add_class("-textual-compact", update=False)
            yield part


class FormInput(StyledOnceMixin, Input):
    """An input that keeps the order of keys typed faster than the app handles them.

    A terminal delivers a quick burst (Tab, End, ctrl+u, 0.2) in one read, and the app queues
    it all on the input focused when it arrives. Textual types printable keys at once but
    looks bindings up (Tab, End, ctrl+u) only after the key has bubbled up to the app, so the
    text used to land in the field being left and the bindings act on the next one. Here the
    input's own bindings and Tab act on the spot, and keys queued after the focus has moved
    on are passed to the widget that has it now."""

    async def _on_key(self, event: events.Key) -> None:
        focused = self.screen.focused
        if focused is not None and focused is not self:
            event.stop()
            event.prevent_default()
            focused.post_message(events.Key(event.key, event.character))
            return
        if event.key in ("tab", "shift+tab"):
            event.stop()
            event.prevent_default()
            self.screen.focus_next() if event.key == "tab" else self.screen.focus_previous()
            return
        own = self._bindings.key_to_bindings.get(event.key)
        if own:
            event.stop()
            event.prevent_default()
            await self.run_action(own[0].action)
            return
        await super()._on_key(event)

    def __init__(self, *args, **kwargs) -> None:
        # The classes it would set itself once mounted (compact; valid, as it has no
        # validators): set now, they cost no restyle then.
        super().__init__(*args, **kwargs)
        self.add_class("-textual-compact", "-valid", update=False)


# The widest dotted key and the key's padding: a key never wraps mid-name where there is room.
KEY_COLUMNS = max(len(f.path) for f in iter_fields()) + 2


class FieldRow(Container):
    """Three widgets per field: the form has about fifty fields and Textual restyles widgets
    one by one, so every widget saved here makes the form open and react faster. The input's
    id is `widget_id(spec.path)`; the screen listens to its Changed messages."""

    # Switch:focus is named too: Switch's own focus rule would otherwise win over a plain
    # descendant selector and draw a three-row border in a one-row grid cell.
    # Where a screen gives the keys less room (the narrow editor), a long key ends in an
    # ellipsis on its one line instead of breaking in the middle of a name.
    DEFAULT_CSS = """
    FieldRow {
        layout: vertical;
        height: auto;
    }

    FieldRow .key {
        position: absolute;
        width: KEY_COLUMNS;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }

    FieldRow > Input, FieldRow > Select, FieldRow > Switch {
        margin-left: KEY_COLUMNS;
    }

    FieldRow Switch, FieldRow Switch:focus {
        border: none;
        height: 1;
        padding: 0;
    }

    FieldRow .note {
        color: $text-muted;
        padding-left: 3;
    }

    FieldRow.invalid .note {
        color: $error;
    }

    FieldRow.invalid Input {
        background: $error 25%;
    }
    """.replace("KEY_COLUMNS", str(KEY_COLUMNS))

    def __init__(self, spec: FieldSpec, value) -> None:
        super().__init__()
        self.spec, self.value = spec, value
        rng = describe_range(spec)
        # A reserved key has no effect yet: editing it would only suggest it does. Its value
        # (from the file, or the default) is shown, and saved back untouched.
        self.help_text = ("read-only, reserved: " if spec.reserved else "") + spec.help + (f"  ({rng})" if rng else "")
        self._shown: str | None = None

    def compose(self) -> ComposeResult:
        spec = self.spec
        yield Label(spec.path, classes="key")
        wid = widget_id(spec.path)
        if spec.type is bool:
            yield Switch(value=bool(self.value), id=wid)
        elif spec.choices:
            yield FormSelect([(str(c), c) for c in spec.choices], value=self.value, allow_blank=False, id=wid, compact=True)
        else:
            yield FormInput(as_text(spec, self.value), id=wid, compact=True, disabled=spec.reserved)
        yield Static(self.help_text, classes="note", markup=False)

    def show_error(self, message: str | None) -> None:
        # Restyling a row is costly in Textual; the form calls this on every keystroke.
        if message == self._shown:
            return
        self._shown = message
        self.set_class(bool(message), "invalid")
        self.query_one(".note", Static).update(f"⚠ {message}" if message else self.help_text)

    @property
    def error_text(self) -> str:
        return self._shown or ""
