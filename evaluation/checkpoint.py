"""Find the exported ComSL model directory inside whatever the user points ``--checkpoint`` at.

Accepted, in this order of preference:
1. the directory itself is a ComSL model directory (``config.json`` of a ComSL model + weights);
2. a checkpoint directory holding the model under ``model/`` (``runs/x/checkpoints/step_500``);
3. a training run directory with ``best/``, ``final/`` or ``export/`` (each a model directory, or
   holding one under ``model/``);
4. a training run directory with ``checkpoints/<name>/model/``: the newest complete one (highest
   step number; ``*.tmp`` directories, which an interrupted save leaves, are never used).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from comsl.errors import CheckpointError

RUN_SUBDIRS: tuple[str, ...] = ("best", "final", "export")
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "model.safetensors.index.json")
_STEP = re.compile(r"(\d+)")


def comsl_config_problem(path: Path) -> str | None:
    """Why ``path`` is not a loadable ComSL model directory, or None when it is one."""
    config = path / "config.json"
    if not config.is_file():
        return "no config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{config} is not valid JSON ({err})"
    if not isinstance(data, dict):
        return f"{config} is not a JSON object"
    model_type = str(data.get("model_type", ""))
    architectures = data.get("architectures") or []
    if "comsl" not in model_type.lower() and not any("comsl" in str(a).lower() for a in architectures):
        return f"{config} is not a ComSL config (model_type={model_type or 'missing'!s})"
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        return f"{path} has config.json but no {' or '.join(WEIGHT_FILES)}"
    return None


def _model_dir_in(path: Path) -> Path | None:
    """``path`` or ``path/model`` when it is a ComSL model directory."""
    for candidate in (path, path / "model"):
        if candidate.is_dir() and comsl_config_problem(candidate) is None:
            return candidate
    return None


def _step_key(path: Path) -> tuple[int, float]:
    numbers = _STEP.findall(path.name)
    return (int(numbers[-1]) if numbers else -1, path.stat().st_mtime)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The ComSL model directory (with config.json and model.safetensors) that ``path`` designates.

    Raises CheckpointError naming ``path`` and what was looked for when none is found.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{root}: expected a directory (exported ComSL model or training run), got a file")
    found = _model_dir_in(root)
    if found is not None:
        return found
    for name in RUN_SUBDIRS:
        found = _model_dir_in(root / name)
        if found is not None:
            return found
    checkpoints = root / "checkpoints"
    if checkpoints.is_dir():
        complete = [
            d for d in checkpoints.iterdir()
            if d.is_dir() and not d.name.endswith(".tmp") and _model_dir_in(d / "model") is not None
        ]
        if complete:
            return max(complete, key=_step_key) / "model"
    own = comsl_config_problem(root)
    raise CheckpointError(
        f"{root}: not a ComSL checkpoint ({own}); expected an exported model directory "
        "(ComSL config.json + model.safetensors), or a training run directory with one in "
        f"{', '.join(n + '/' for n in RUN_SUBDIRS)} or checkpoints/<step>/model/"
    )
