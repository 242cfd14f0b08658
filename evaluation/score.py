"""Entry point: `python evaluation/score.py ARGS` is `comsl score ARGS` (code: comsl/evaluation/)."""

import sys

from comsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
