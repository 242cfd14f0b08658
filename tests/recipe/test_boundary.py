"""The package never imports the recipe's code (examples/covost2/mini), and the `comsl` command has no
recipe-only subcommand."""

from __future__ import annotations

import ast
from pathlib import Path

from comsl.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_comsl_never_imports_the_recipe():
    offenders = []
    for path in sorted((ROOT / "comsl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("mini", "examples")]
    assert offenders == []


def test_cli_has_no_recipe_only_subcommands():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert "fetch" not in commands
    assert commands["convert"]._actions[1].choices == ("ct2-whisper",)
    prepare = commands["prepare"]._subparsers._group_actions[0].choices
    assert set(prepare) == {"covost2", "pseudo"}
