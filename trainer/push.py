"""`orpo-train push RUN_DIR --repo ID [--best] [--fused] [--private] [--dry-run DIR]`: upload a
run's adapters (or its fused model) with a generated model card to the Hugging Face hub.

The upload folder holds `adapters.safetensors` and `adapter_config.json` (what
`mlx_lm.load(base, adapter_path=...)` reads), or with `--fused` the folder `orpo-train fuse`
wrote, plus `README.md` (trainer.pure.model_card). `--dry-run DIR` writes that folder to DIR
(new or empty) and touches no network; otherwise it goes to a temporary folder and
huggingface_hub's `create_repo` + `upload_folder` send it (`HF_ENDPOINT`, `HF_TOKEN` as
huggingface_hub reads them), with a 10 s connect timeout so an offline machine fails at
once instead of hanging.

Exit codes: 0 uploaded (the repo's URL is the only stdout line) or written (DIR is the
line), 2 bad input (one line on stderr), 1 the hub could not be reached or refused (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from trainer.fuse import FuseInputError, adapter_folder
from trainer.pure.config import ConfigError, load_preset
from trainer.pure.messages import describe, first_line
from trainer.pure.model_card import CARD, render_card
from trainer.pure.run_folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RunFolder
from trainer.pure.trainer_process import ExitCode

PROG = "orpo-train push"
CONNECT_TIMEOUT_S = 10.0
# Per read or write of one chunk, not the whole upload.
IO_TIMEOUT_S = 120.0


class PushInputError(Exception):
    """Something the user can fix, as one line (exit 2)."""


class HubError(Exception):
    """The hub could not be reached or refused the upload, as one line (exit 1)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Upload a run's adapters or fused model to the Hugging Face hub.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--repo", required=True, metavar="ID", help="the hub model repo, e.g. you/my-orpo-adapters")
    p.add_argument("--best", action="store_true", help="the best-validation adapters (with --fused: RUN_DIR/fused-best)")
    p.add_argument("--fused", action="store_true", help="the fused model `orpo-train fuse RUN_DIR` wrote")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR and upload nothing")
    return p


def _check_repo_id(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise PushInputError(f"--repo {repo}: {first_line(exc)}") from None
    if repo.count("/") != 1:
        raise PushInputError(f"--repo {repo}: give the owner too, as OWNER/NAME")


def build_folder(run_dir: Path, repo: str, out: Path, best: bool = False, fused: bool = False) -> Path:
    """Write the upload folder into `out` (created; must be empty if it exists)."""
    folder = RunFolder(run_dir)
    if not folder.root.is_dir():
        raise PushInputError(f"{run_dir}: no such run directory")
    if not folder.config.is_file():
        raise PushInputError(f"{run_dir}: not a run directory (no {folder.config.name})")
    try:
        cfg = load_preset(folder.config)
    except ConfigError as exc:
        raise PushInputError(str(exc)) from None
    if fused:
        source = folder.fused(best)
        if not (source / "config.json").is_file():
            again = "orpo-train fuse --best" if best else "orpo-train fuse"
            raise PushInputError(f"{run_dir}: no fused model ({source.name}/); run `{again} {run_dir}` first")
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name != CARD)
    else:
        try:
            source = adapter_folder(run_dir, best)
        except FuseInputError as exc:
            raise PushInputError(str(exc)) from None
        files = [source / ADAPTER_WEIGHTS, source / ADAPTER_CONFIG]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PushInputError(f"--dry-run {out}: exists and is not an empty folder")
    card = render_card(cfg, run_dir, repo, best, fused)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, out / f.name)
    (out / CARD).write_text(card, encoding="utf-8")
    return out


def upload(folder: Path, repo: str, private: bool) -> str:
    """Create the repo (if new) and upload the folder; the repo's URL."""
    import huggingface_hub as hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    session = hub.get_session()
    with contextlib.suppress(Exception):  # an httpx client (huggingface_hub >= 1.0) has none by default
        session.timeout = type(session.timeout)(IO_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    endpoint = constants.ENDPOINT
    try:
        url = hub.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        hub.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                          commit_message="Upload ORPO model from orpo-tui")
    except OfflineModeIsEnabled:
        raise HubError("HF_HUB_OFFLINE is set: nothing was uploaded") from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status == 401:
            raise HubError(f"{endpoint}: not logged in (run `hf auth login` or set HF_TOKEN); nothing was uploaded") from None
        if status == 403:
            raise HubError(f"{endpoint}: this token may not write to {repo}; nothing was uploaded") from None
        raise HubError(f"{endpoint}: {first_line(exc)}; nothing was uploaded") from None
    except Exception as exc:  # no network, DNS, TLS, a proxy: httpx's or requests' own errors
        raise HubError(f"cannot reach the hub at {endpoint}: {describe(exc)}; nothing was uploaded") from None
    return str(url)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        _check_repo_id(args.repo)
        if args.dry_run:
            print(build_folder(run_dir, args.repo, Path(args.dry_run), args.best, args.fused), flush=True)
            return ExitCode.OK
        with tempfile.TemporaryDirectory(prefix="orpo-push-") as tmp:
            folder = build_folder(run_dir, args.repo, Path(tmp) / "upload", args.best, args.fused)
            url = upload(folder, args.repo, args.private)
    except PushInputError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    except HubError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return ExitCode.ERROR
    print(url, flush=True)
    return ExitCode.OK
