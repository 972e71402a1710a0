"""The contract of ``orpo-train serve`` for whoever starts it (the app's playground, scripts).

Command line::

    orpo-train serve RUN_DIR [--best] [--fused] [--base] [--port N]

- The first stdout line is the server's base URL, ``http://127.0.0.1:PORT/v1`` (an
  OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, and
  ``/health`` beside it), printed once the model is loaded and the server answers HTTP.
- SIGINT/SIGTERM stop it; exit 0. Exit 2 with one ``orpo-train serve: ...`` line on stderr for
  bad input (no run, no adapters, no fused folder, a busy port); 1 when the model fails to load.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from trainer.pure.config import ConfigError, load_preset
from trainer.pure.run_folder import RunFolder
from trainer.pure.sources import SourceError, SourceKind, resolve_source, split_files
from trainer.pure.trainer_process import TRAINER, read_first_line

__all__ = ["HOST", "STDIN_WATCH_FLAG", "base_url", "serve_argv", "read_base_url", "trained_on_chat_template"]

# Loopback only: mlx_lm.server has no authentication.
HOST = "127.0.0.1"


def base_url(port: int) -> str:
    return f"http://{HOST}:{port}/v1"


# For a caller that starts the server as its child: the server ends when its stdin reaches
# end of file, which the kernel brings about when the caller dies, even by SIGKILL.
STDIN_WATCH_FLAG = "--until-stdin-closes"


def serve_argv(run_dir: Any, best: bool = False, fused: bool = False, base: bool = False, port: int = 0,
               until_stdin_closes: bool = False) -> list[str]:
    return ([*TRAINER, "serve", str(run_dir)] + (["--best"] if best else []) + (["--fused"] if fused else [])
            + (["--base"] if base else []) + ["--port", str(port)] + ([STDIN_WATCH_FLAG] if until_stdin_closes else []))


def read_base_url(proc: subprocess.Popen, timeout: float | None = None) -> str | None:
    """The base URL a starting server announces on its first stdout line (a text-mode pipe),
    or None when it exits, or ``timeout`` passes, without printing one."""
    return read_first_line(proc, timeout)


def trained_on_chat_template(run_dir: Any) -> bool:
    """Whether the run's prompts went through the tokenizer's chat template in training:
    `data.apply_chat_template` is on, or the data's rows are conversations (a list of
    messages in the chosen column of the first train row). Then a client should talk to
    ``/v1/chat/completions`` (the server applies the same template); otherwise the run
    learned plain prompts, which ``/v1/completions`` passes as they are. A source this cannot
    read without loading it (parquet, the hub) counts as plain unless the flag is on."""
    try:
        cfg = load_preset(RunFolder(run_dir).config)
    except (ConfigError, OSError):
        return False
    if cfg.data.apply_chat_template:
        return True
    try:
        source = resolve_source(cfg.data.path)
        if source.kind is SourceKind.HUB:
            return False
        train = split_files(source, cfg.data).train
        row = _first_row(train)
    except (SourceError, ValueError, OSError):
        return False
    return isinstance(row, dict) and isinstance(row.get(cfg.data.chosen_feature), list)


def _first_row(path: Path) -> Any:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    return json.loads(line)
        return None
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        return data[0] if isinstance(data, list) and data else None
    return None
