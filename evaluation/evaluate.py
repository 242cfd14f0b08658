"""Entry point: `python evaluation/evaluate.py ARGS` is `comsl evaluate ARGS` (code: comsl/evaluation/)."""

import sys

from comsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
