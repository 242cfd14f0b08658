"""The ``comsl`` command: ``prepare | train | tune-batches | evaluate | score | translate | convert``.

Each subcommand lives in ``comsl/commands/<name>.py`` (dashes as underscores) and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from comsl.errors import ComSLError

# Subcommand -> module; order is the order shown in ``comsl --help``.
COMMANDS = ("prepare", "train", "tune-batches", "evaluate", "score", "translate", "convert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comsl", description="Composite speech-language models for speech translation."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # The deepspeed launcher puts --local_rank=N before the subcommand; the rank is read from the environment.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"comsl.commands.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except ComSLError as err:
        # Expected user-facing failures: one clear line, no traceback.
        print(f"comsl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # The file system refused (full disk, read-only, a file where a directory belongs, ...).
        where = f"{err.filename}: " if err.filename else ""
        print(f"comsl {args.command}: error: {where}{err.strerror or err}; check the path, its permissions "
              "and the free disk space", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
