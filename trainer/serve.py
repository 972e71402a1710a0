"""`orpo-train serve RUN_DIR [--best] [--fused] [--base] [--port N]`: mlx-lm's own
OpenAI-compatible server (`mlx_lm.server`) for a run's model, on 127.0.0.1 only.

What it serves: the base the run recorded (`model.resolved_path`) with the run's latest
adapters; `--best` the best-validation adapters; `--fused` the folder `orpo-train fuse` wrote
(`--fused --best`: `fused-best/`); `--base` the bare base. The tokenizer, and so the chat
template `/v1/chat/completions` applies, is the one in the model folder, the same one
training rendered its chat rows with; a run that trained on plain prompts matches
`/v1/completions` instead (a stderr line says which).

The first stdout line is the base URL, ``http://127.0.0.1:PORT/v1``, printed once the model is
loaded and the server answers HTTP; nothing else comes on stdout (the server logs on stderr).

Why in this process rather than as a child: mlx_lm.server's own `main()` runs here, so there
is no second process that could outlive this one (a SIGKILL ends the server with it, on
macOS too, which has no parent-death signal), and no pipe or process group to manage.
SIGINT/SIGTERM stop it: the HTTP server shuts down, the generation thread is joined, exit 0
(the normal end of a server; a second signal, or a generation thread slow to stop, ends it
at once, still 0).

Exit codes: 0 stopped by a signal, 2 bad input (one line on stderr: no run, no adapters,
no fused folder, a busy port), 1 anything else (the model failed to load: one line too).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from trainer.backend_choice import MPI_LIBNAME_ENV
from trainer.fuse import FuseInputError, adapter_folder, base_folder
from trainer.pure.messages import describe
from trainer.pure.run_folder import RunFolder
from trainer.pure.serve import HOST, STDIN_WATCH_FLAG, base_url, trained_on_chat_template
from trainer.pure.trainer_process import ExitCode

PROG = "orpo-train serve"
# After a stop signal, how long the server's own shutdown may take before the process ends
# anyway (a generation thread still loading a large model only notices at the end of it).
STOP_GRACE_S = 5.0


class ServeInputError(Exception):
    """Something the user can fix, as one line (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Serve a run's model with mlx-lm's OpenAI-compatible server on 127.0.0.1.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--best", action="store_true", help="the best-validation adapters (with --fused: RUN_DIR/fused-best)")
    p.add_argument("--fused", action="store_true", help="the fused model `orpo-train fuse RUN_DIR` wrote (RUN_DIR/fused)")
    p.add_argument("--base", action="store_true", help="the bare base model, without adapters")
    p.add_argument("--port", type=int, default=0, metavar="N", help="port on 127.0.0.1 (default 0: a free one)")
    p.add_argument(STDIN_WATCH_FLAG, action="store_true",
                   help="stop when stdin reaches end of file (for a program that starts the server as its child "
                        "and holds the other end of a pipe: the server then ends when that program dies)")
    return p


def resolve_model(run_dir: Path, best: bool = False, fused: bool = False, base: bool = False) -> tuple[Path, Path | None]:
    """(model folder, adapter folder or None) the server loads; raises ServeInputError."""
    if base and (best or fused):
        raise ServeInputError("--base serves the bare base: it goes with neither --best nor --fused")
    folder = RunFolder(run_dir)
    if not folder.root.is_dir():
        raise ServeInputError(f"{run_dir}: no such run directory")
    try:
        if fused:
            model = folder.fused(best)
            if not (model / "config.json").is_file():
                again = "orpo-train fuse --best" if best else "orpo-train fuse"
                raise ServeInputError(f"{run_dir}: no fused model ({model.name}/); run `{again} {run_dir}` first")
            return model, None
        model = base_folder(run_dir)
        return model, (None if base else adapter_folder(run_dir, best))
    except FuseInputError as exc:
        raise ServeInputError(str(exc)) from None


def claim_port(port: int) -> int:
    """The port to serve on: `port`, checked free, or for 0 a free one the kernel picks.
    Bound the way the server will bind it (SO_REUSEADDR, like http.server), then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeInputError(f"port {port} is in use") from None
            if exc.errno == errno.EACCES:
                raise ServeInputError(f"port {port} needs privileges; choose one above 1023") from None
            raise ServeInputError(f"port {port}: {exc.strerror or exc}") from None
        except OverflowError:
            raise ServeInputError(f"port {port}: must be 0-65535") from None
        return probe.getsockname()[1]


class _LastError(logging.Handler):
    """Keeps the last error the server logged: why its generation thread died."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.message = describe(exc) if exc else record.getMessage()


class _Readiness(threading.Thread):
    """Prints the URL once the model is loaded and /health answers 200; ends the process
    with one line if the server's generation thread dies first."""

    def __init__(self, port: int, out, last_error: _LastError, what: Path):
        super().__init__(name="serve-readiness", daemon=True)
        self.port, self.out, self.last_error, self.what = port, out, last_error, what
        self.provider = None  # mlx_lm.server's ModelProvider, once its run() has it

    def run(self) -> None:
        health = f"http://{HOST}:{self.port}/health"
        last_check = 0.0
        while True:
            time.sleep(0.05)
            loaded = self.provider is not None and self.provider.model is not None
            # While the model loads, a check a second is enough to see a dead generation
            # thread (each check is a line in the server's access log).
            if not loaded and time.monotonic() - last_check < 1.0:
                continue
            last_check = time.monotonic()
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    healthy = resp.status == 200
            except urllib.error.HTTPError:
                healthy = False  # 503: the generation thread is gone
            except OSError:
                continue  # not listening yet
            if not healthy:
                _finish(f"{self.what}: the model did not load: {self.last_error.message or 'the generation thread died'}", ExitCode.ERROR)
            # No provider while HTTP answers: this mlx-lm's main() did not go through the
            # run() we wrap, so answering HTTP is all that can be waited for.
            if loaded or self.provider is None:
                print(base_url(self.port), file=self.out, flush=True)
                return


def _finish(message: str | None, code: int) -> None:
    """End the process now: mlx_lm.server's generation thread is not a daemon."""
    if message:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(int(code))


def _stop_at_stdin_eof() -> None:
    """Read stdin until end of file, then end: the parent holding the pipe is gone."""
    def watch():
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        _finish(None, ExitCode.OK)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _install_stop_handlers() -> None:
    def handler(signum, _frame):
        if getattr(handler, "seen", False):
            _finish(None, ExitCode.OK)
        handler.seen = True
        threading.Timer(STOP_GRACE_S, _finish, (None, ExitCode.OK)).start()
        raise KeyboardInterrupt  # what mlx_lm.server's serve loop stops on

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def serve(model: Path, adapters: Path | None, port: int) -> int:
    """Run mlx_lm.server's main() here until a signal stops it."""
    # The server calls mx.distributed.init(), which finds an installed OpenMPI and starts its
    # `orted` daemon as a child: a second process, which could outlive this one. One process
    # serves; with no MPI library to load MLX falls back to a group of one.
    os.environ[MPI_LIBNAME_ENV] = os.devnull
    import mlx_lm.server as server
    from huggingface_hub import constants

    # /v1/models lists the hub cache's models, and fails without that folder (a machine that
    # only ever used local models); an empty one lists just the served model.
    with contextlib.suppress(OSError):
        Path(constants.HF_HUB_CACHE).mkdir(parents=True, exist_ok=True)

    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # stdout carries the URL line only
    last_error = _LastError()
    ready = _Readiness(port, real_stdout, last_error, adapters or model)
    original_run = server.run

    def run_watched(host, port_, provider, *args, **kwargs):
        logging.getLogger().addHandler(last_error)  # after main()'s basicConfig
        ready.provider = provider  # before the HTTP server is up: the readiness check sees it
        return original_run(host, port_, provider, *args, **kwargs)

    argv = ["mlx_lm.server", "--model", str(model), "--host", HOST, "--port", str(port), "--log-level", "WARNING"]
    if adapters is not None:
        argv += ["--adapter-path", str(adapters)]
    saved_argv, sys.argv = sys.argv, argv
    server.run = run_watched
    ready.start()
    try:
        server.main()
    except KeyboardInterrupt:
        pass  # stopped before the serve loop was up
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:  # taken between our check and the server's bind
            _finish(f"port {port} is in use", ExitCode.BAD_INPUT)
        raise
    finally:
        server.run = original_run
        sys.argv = saved_argv
    return ExitCode.OK


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        model, adapters = resolve_model(run_dir, args.best, args.fused, args.base)
        port = claim_port(args.port)
    except ServeInputError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    if not args.fused and not args.base:
        endpoint = "/v1/chat/completions" if trained_on_chat_template(run_dir) else "/v1/completions (plain prompts)"
        print(f"{PROG}: serving {model} with {adapters}; prompts as in training: {endpoint}", file=sys.stderr, flush=True)
    _install_stop_handlers()
    if args.until_stdin_closes:
        _stop_at_stdin_eof()
    try:
        code = serve(model, adapters, port)
    except Exception as exc:
        traceback.print_exc()
        _finish(describe(exc), ExitCode.ERROR)
    _finish(None, code)
    return code  # not reached
