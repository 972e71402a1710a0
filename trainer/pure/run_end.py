"""How a run ended, in the words every notification uses: the app's terminal notification
and the trainer's ``notify_command`` say the same thing.

``notify_command`` (trainer/pure/user_settings.py) is an argv list run without a shell. Each
argument may hold placeholders, replaced by plain text substitution (no format language, so
braces elsewhere stay as they are):

- ``{name}``: the run folder's name, e.g. ``20250101-120000-demo``
- ``{state}``: ``completed``, ``failed``, ``stopped`` or ``crashed``
- ``{val_loss}``: the last validation loss to 4 decimals (``nan`` for a diverged run),
  ``none`` when the run never validated
- ``{run_dir}``: the run folder's full path
- ``{title}``: ``orpo-tui: <name> <state>``
- ``{message}``: ``<name> <state>, val loss <v>`` (and the error of a failed run)

When no argument holds a placeholder, the message is added as the last argument, so
``["ntfy", "publish", "my-topic"]`` publishes it as is. The command also gets them in its
environment as ``ORPO_RUN_NAME``, ``ORPO_RUN_STATE``, ``ORPO_VAL_LOSS`` (empty when none) and
``ORPO_RUN_DIR``.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainer.pure.events import last_event
from trainer.pure.metrics import LOSS
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import effective_state, read_status

__all__ = ["APP_NAME", "PLACEHOLDERS", "RunEnd", "read_run_end", "command_argv", "command_env"]

APP_NAME = "orpo-tui"
PLACEHOLDERS = ("{name}", "{state}", "{val_loss}", "{run_dir}", "{title}", "{message}")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
ERROR_CHARS = 120  # of a failed run's error in a notification; the run folder has it whole


@dataclass(frozen=True)
class RunEnd:
    run_dir: Path
    state: str
    val_loss: float | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def val_loss_text(self) -> str:
        return "none" if self.val_loss is None else f"{self.val_loss:.4f}"

    @property
    def title(self) -> str:
        return f"{APP_NAME}: {self.name} {self.state}"

    @property
    def message(self) -> str:
        loss = "no val loss" if self.val_loss is None else f"val loss {self.val_loss:.4f}"
        text = f"{self.name} {self.state}, {loss}"
        if self.error:
            error = " ".join(self.error.split())
            text += f": {error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + '…'}"
        return text


def read_run_end(run_dir: Path, state: str | None = None) -> RunEnd:
    """The end of a run from its folder: its effective state (or `state`, when the caller
    knows better, e.g. a trainer that is still running), its error and last val loss."""
    status = read_status(run_dir) or {}
    record = last_event(RunFolder(run_dir).metrics, "val") or {}
    loss = record.get(LOSS)
    val_loss = float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None
    return RunEnd(Path(run_dir), str(state or effective_state(status or None)), val_loss, status.get("error"))


def command_argv(template: tuple[str, ...] | list[str], end: RunEnd) -> list[str]:
    """`notify_command` with its placeholders filled (see the module's docstring)."""
    values = {"{name}": end.name, "{state}": end.state, "{val_loss}": end.val_loss_text, "{run_dir}": str(end.run_dir),
              "{title}": end.title, "{message}": end.message}
    # One pass per argument: text put in (an error message, a path) is never read again.
    argv = [_PLACEHOLDER.sub(lambda m: values[m.group(0)], arg) for arg in template]
    used = any(_PLACEHOLDER.search(arg) for arg in template)
    return argv if used else [*argv, end.message]


def command_env(end: RunEnd) -> dict[str, str]:
    return {"ORPO_RUN_NAME": end.name, "ORPO_RUN_STATE": end.state,
            "ORPO_VAL_LOSS": "" if end.val_loss is None else repr(end.val_loss), "ORPO_RUN_DIR": str(end.run_dir)}
