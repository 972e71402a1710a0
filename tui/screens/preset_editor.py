"""Edit one preset: a form generated from the config metadata, validated as you type, with
derived values and an on-demand dataset check beside it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Select, Static, Switch

from trainer.pure.config import (Config, ConfigError, FieldSpec, dump_toml, get_value, iter_fields, parse_value,
                            replace_value, validate, validate_field)
from tui import presets_store as store
from tui.derived import count_train_rows, derived_values
from tui.screens.dialogs import AskName, ShowCommand, leave_unless_kept

# The grouping of MLX-LoRA-Studio's shared form, which users of MLX fine-tuning know.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Preset", ("description",)),
    ("Model & Data", ("model.path", "data.")),
    ("Fine-tune + Quantization", ("finetune.", "model.quantize.")),
    ("ORPO", ("orpo.",)),
    ("QAT", ("qat.",)),
    ("Training", ("training.",)),
    ("Output", ("output.",)),
)
HIDDEN = {"model.resolved_path"}  # written by the trainer into a run, never by hand


def grouped_fields() -> list[tuple[str, list[FieldSpec]]]:
    fields = [f for f in iter_fields() if f.path not in HIDDEN]
    out = []
    for title, prefixes in GROUPS:
        members = [f for p in prefixes for f in fields if f.path == p or (p.endswith(".") and f.path.startswith(p))]
        out.append((title, members))
    return out


def widget_id(path: str) -> str:
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


class FieldRow(Container):
    """Key, input, and a note under them that shows the help, or the error when there is one.
    Three widgets per field: the form has about fifty fields and Textual restyles widgets one
    by one, so every widget saved here makes the form open and react faster."""

    def __init__(self, spec: FieldSpec, value) -> None:
        super().__init__(classes="field")
        self.spec, self.value = spec, value
        rng = describe_range(spec)
        self.help_text = spec.help + (" [reserved: accepted, not used yet]" if spec.reserved else "") + (f"  ({rng})" if rng else "")

    def compose(self) -> ComposeResult:
        spec = self.spec
        yield Label(spec.path, classes="key")
        wid = widget_id(spec.path)
        if spec.type is bool:
            yield Switch(value=bool(self.value), id=wid)
        elif spec.choices:
            yield Select([(str(c), c) for c in spec.choices], value=self.value, allow_blank=False, id=wid, compact=True)
        else:
            yield Input(as_text(spec, self.value), id=wid, compact=True)
        yield Static(self.help_text, classes="note", markup=False)

    def show_error(self, message: str | None) -> None:
        # Restyling a row is costly in Textual; the form calls this on every keystroke.
        if message == getattr(self, "_shown", None):
            return
        self._shown = message
        self.set_class(bool(message), "invalid")
        self.query_one(".note", Static).update(f"⚠ {message}" if message else self.help_text)

    @property
    def error_text(self) -> str:
        return getattr(self, "_shown", None) or ""


class PresetEditorScreen(Screen):
    CSS_PATH = "preset_editor.tcss"
    # Below 110 columns the side panel moves under the form (see the -narrow rules).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="editor.save", tooltip="Save changed keys to the preset file", priority=True),
        Binding("ctrl+o", "save_as", "Save as", id="editor.save_as", tooltip="Save to a new preset file", priority=True),
        Binding("ctrl+r", "start", "Start run", id="editor.start", tooltip="Train this preset (saves first)", priority=True),
        Binding("ctrl+b", "preflight", "Check data", id="editor.preflight", tooltip="Load the dataset and report on it", priority=True),
        Binding("ctrl+t", "show_command", "Command", id="editor.command", tooltip="Show the orpo-train command", priority=True),
        Binding("escape", "back", "Back", id="editor.back", tooltip="Back to the preset list (asks about unsaved changes)"),
    ]

    def __init__(self, entry: store.PresetEntry) -> None:
        super().__init__()
        assert entry.config is not None
        self.entry = entry
        self.saved: Config = entry.config
        self.working: Config = entry.config
        self.field_errors: dict[str, str] = {}  # text that does not parse or is out of range
        self.cross_errors: dict[str, str] = {}
        self.train_rows: int | None = count_train_rows(entry.config)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with VerticalScroll(id="form"):
                for title, specs in grouped_fields():
                    yield Label(title, classes="group")
                    for spec in specs:
                        yield FieldRow(spec, get_value(self.working, spec.path))
            with VerticalScroll(id="side"):
                yield Label("Derived", classes="side-title")
                yield Static(id="derived", markup=False)
                yield Label("Problems", classes="side-title")
                yield Static(id="problems", markup=False)
                yield Label("Data check (ctrl+b)", classes="side-title")
                yield Static("Not run yet.", id="preflight", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_state()
        self.query(Input).first().focus()

    # ------------------------------------------------------------------ state

    @property
    def dirty(self) -> bool:
        return self.working != self.saved or bool(self.field_errors)

    @property
    def errors(self) -> dict[str, str]:
        return {**self.cross_errors, **self.field_errors}

    def refresh_state(self) -> None:
        self.cross_errors = {}
        for problem in validate(self.working):
            if problem.key not in self.field_errors:
                self.cross_errors.setdefault(problem.key, problem.message)
        for row in self.query(FieldRow):
            row.show_error(self.errors.get(row.spec.path))
        self.query_one("#derived", Static).update(
            "\n".join(f"{k}: {v}" for k, v in derived_values(self.working, self.train_rows))
        )
        problems = self.errors
        self.query_one("#problems", Static).update(
            "\n".join(f"{k}: {v}" for k, v in problems.items()) if problems else "None: ready to save and run."
        )
        self.query_one("#problems", Static).set_class(bool(problems), "error-text")
        self.sub_title = f"{self.entry.path.name}{' ● unsaved' if self.dirty else ''}"
        self.title = "Edit preset"

    def set_field(self, path: str, value) -> None:
        if path not in self.field_errors and get_value(self.working, path) == value:
            return  # widgets report their initial values on mount: nothing changed
        problem = validate_field(path, value)
        if problem:
            self.field_errors[path] = problem
        else:
            self.field_errors.pop(path, None)
            self.working = replace_value(self.working, path, value)
        self.refresh_state()

    @on(Input.Changed)
    def input_changed(self, event: Input.Changed) -> None:
        if not (event.input.id or "").startswith("f-"):
            return
        path = path_of(event.input.id)
        try:
            value = parse_value(path, event.value, source="form")
        except ConfigError as exc:
            self.field_errors[path] = exc.problem
            self.refresh_state()
            return
        self.set_field(path, value)

    @on(Switch.Changed)
    def switch_changed(self, event: Switch.Changed) -> None:
        self.set_field(path_of(event.switch.id), event.value)

    @on(Select.Changed)
    def select_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK:
            self.set_field(path_of(event.select.id), event.value)

    # ------------------------------------------------------------------ actions

    def _blocked(self) -> bool:
        if self.errors:
            first = next(iter(self.errors.items()))
            self.notify(f"Not saved: {first[0]}: {first[1]}", severity="error")
            return True
        return False

    def action_save(self) -> bool:
        if self._blocked():
            return False
        path = store.save_changes(self.entry, self.working)
        self.entry = store.load_entry(path)
        self.saved = self.working = self.entry.config or self.working
        self.notify(f"Saved {path.name}")
        self.refresh_state()
        return True

    def action_save_as(self) -> None:
        if self._blocked():
            return

        def done(name: str | None) -> None:
            if not name:
                return
            try:
                target = store.preset_path(self.entry.path.parent, name)
                if target.exists():
                    raise store.PresetFileError(f"{target.name} already exists")
                store.save_changes(self.entry, self.working, target=target)
            except store.PresetFileError as exc:
                self.notify(str(exc), severity="error")
                return
            self.entry = store.load_entry(target)
            self.saved = self.working = self.entry.config or self.working
            self.notify(f"Saved as {target.name}")
            self.refresh_state()

        self.app.push_screen(AskName("Save as", f"{self.entry.name}-copy"), done)

    def action_start(self) -> None:
        """A run must match a file on disk, so unsaved edits are saved first."""
        if self.dirty and not self.action_save():
            return
        self.app.start_run(self.entry.path)

    def action_show_command(self) -> None:
        note = "  # unsaved changes are not in the file yet" if self.dirty else ""
        self.app.push_screen(ShowCommand("Train this preset", store.train_command(self.entry.path, self.app.runs_dir) + note))

    def action_back(self) -> None:
        self.leave(then=self.app.pop_screen)

    def leave(self, then) -> None:
        leave_unless_kept(self, self.dirty, self.entry.path.name, self.action_save, then)

    def action_preflight(self) -> None:
        self.query_one("#preflight", Static).update("Checking the data… (loads the dataset and tokenizer)")
        self.run_preflight(self.working)

    @work(thread=True, exclusive=True, exit_on_error=False, name="data check")
    def run_preflight(self, cfg: Config) -> None:
        # The check runs in a trainer subprocess: the app itself never imports datasets or mlx.
        from tui.preflight_client import PreflightError, run_preflight

        with tempfile.TemporaryDirectory(prefix="orpo-tui-preflight-") as tmp:
            path = dump_toml(cfg, Path(tmp) / f"{self.entry.name}.toml")
            try:
                report = run_preflight(path)
            except PreflightError as exc:
                self.app.call_from_thread(self.show_preflight_text, Text(f"error: {exc}", style="bold red"))
                return
        self.app.call_from_thread(self.show_preflight, report)

    def show_preflight(self, report) -> None:
        from tui.preflight_client import format_report

        styles = {"error:": "bold red", "warning:": "yellow", "  prompt": "dim", "  chosen": "green", "  rejected": "red"}
        text = Text()
        for line in format_report(report):
            style = next((st for prefix, st in styles.items() if line.startswith(prefix)), "")
            text.append(line + "\n", style=style)
        self.show_preflight_text(text)
        rows = (report.splits or {}).get("train")
        if rows:
            self.train_rows = rows
            self.refresh_state()

    def show_preflight_text(self, text: Text) -> None:
        self.query_one("#preflight", Static).update(text)

    def commands(self):
        yield SystemCommand("Start run", "Save and train this preset in the background", self.action_start)
        yield SystemCommand("Save preset", "Save changed keys to the file", self.action_save)
        yield SystemCommand("Save preset as", "Save to a new preset file", self.action_save_as)
        yield SystemCommand("Check data", "Load the dataset and report rows, columns and lengths", self.action_preflight)
        yield SystemCommand("Show train command", "The orpo-train command for this preset", self.action_show_command)
