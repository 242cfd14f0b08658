"""Find the exported ComSL model directory inside whatever the user points ``--checkpoint`` at.

Accepted, in this order of preference:
1. the directory itself is a ComSL model directory (``config.json`` of a ComSL model + weights);
2. a checkpoint directory holding the model under ``model/`` (``runs/x/checkpoints/step_500``);
3. a training run directory with ``best/``, ``final/`` or ``export/`` (each a model directory, or
   holding one under ``model/``);
4. a training run directory with ``checkpoints/step_<N>/model/``: the newest complete one (highest
   N with the trainer's ``COMPLETE`` marker; ``step_<N>.tmp`` directories, which an interrupted save
   leaves, are never used).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from comsl.errors import CheckpointError

RUN_SUBDIRS: tuple[str, ...] = ("best", "final", "export")
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "model.safetensors.index.json")
# Same names as comsl.training.checkpoint (MARKER, STEP_DIR); kept here so evaluation needs no trainer.
COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d+)$")


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


def _training_checkpoints(checkpoints: Path) -> tuple[list[tuple[int, Path]], list[str]]:
    """Complete ``step_<N>`` checkpoints holding an exported ``model/``, and why others were skipped."""
    usable, skipped = [], []
    for d in sorted(checkpoints.iterdir()):
        match = _STEP_DIR.match(d.name)
        if not d.is_dir() or match is None:
            continue
        if not (d / COMPLETE_MARKER).is_file():
            skipped.append(f"{d.name}: no {COMPLETE_MARKER} marker")
        elif _model_dir_in(d / "model") is None:
            skipped.append(f"{d.name}: no exported model/ (train.checkpoint_export off?)")
        else:
            usable.append((int(match.group(1)), d / "model"))
    return usable, skipped


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
    skipped: list[str] = []
    if (root / "checkpoints").is_dir():
        usable, skipped = _training_checkpoints(root / "checkpoints")
        if usable:
            return max(usable)[1]
    why = "; ".join([str(comsl_config_problem(root))] + skipped)
    raise CheckpointError(
        f"{root}: not a ComSL checkpoint ({why}); expected an exported model directory "
        "(ComSL config.json + model.safetensors), or a training run directory with one in "
        f"{', '.join(n + '/' for n in RUN_SUBDIRS)} or checkpoints/step_<N>/model/ (with {COMPLETE_MARKER})"
    )
