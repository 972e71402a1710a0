"""`orpo-tui [--presets DIR] [--runs-dir DIR]`: start the app."""

from __future__ import annotations

import argparse
import sys

from tui.settings import resolve_folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orpo-tui", description="Terminal experiment manager for ORPO on MLX.")
    parser.add_argument("--presets", metavar="DIR", help="folder of preset TOML files (default: the repo's presets/)")
    parser.add_argument("--runs-dir", metavar="DIR", help="folder of run directories (default: the repo's runs/)")
    args = parser.parse_args(argv)
    folders = resolve_folders(args.presets, args.runs_dir)

    from tui.app import make_app

    make_app(folders.presets, folders.runs).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
