"""The on-disk layout of a training run: names, the completion marker, checksums, listing checkpoints and
finding the exported model. The trainer writes this layout; evaluation, translation and stage 2's
``init_from``/``teacher`` read it; both import it from here.

A run directory ``<out_dir>/``::

    LOCK                    held by the live run (``comsl.training.run_lock``)
    config.yaml             resolved config of the latest invocation
    metrics.jsonl           one record per logged step / evaluation
    best/ final/            exported models (``save_pretrained`` + tokenizer)
    checkpoints/step_<N>/   written as ``step_<N>.tmp/`` and renamed when complete

A checkpoint ``step_<N>/``::

    COMPLETE                completion marker, written last (a directory without it is never resumed)
    checksums.json          relative path -> size and sha256 of every other file (verified on resume)
    trainer_state.json      step, epoch, position in the epoch, non-finite counters, dev BLEU, best list
    structure.json          name -> shape of every parameter/buffer (checked before loading)
    config.yaml             resolved run config (differences on resume are warnings)
    rank_<r>.pt             per-rank RNG (python, numpy, torch, cuda), sampler and loss-scaler state
    model.safetensors       torch engine: the full model state
    optimizer.pt            torch engine: optimizer state (loaded with ``weights_only=True``)
    deepspeed/              DeepSpeed engine: its own (partitioned) model/optimizer files
    model/                  optional self-contained export (``save_pretrained``)

``--checkpoint DIR`` (evaluate, translate, init_from, teacher) designates, in this order of preference:
the directory itself when it is a ComSL model directory; its ``model/``; a run directory's ``best/``,
``final/`` or ``export/`` (each a model directory or holding one under ``model/``); the newest complete
``checkpoints/step_<N>/model/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from comsl.errors import CheckpointError

CHECKPOINTS = "checkpoints"
MARKER = "COMPLETE"
CHECKSUMS = "checksums.json"
STEP_DIR = re.compile(r"^step_(\d+)$")
TMP_SUFFIX = ".tmp"
RUN_SUBDIRS: tuple[str, ...] = ("best", "final", "export")
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "model.safetensors.index.json")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step}"


def list_checkpoints(root: Path) -> tuple[list[tuple[int, Path]], list[tuple[Path, str]]]:
    """Complete checkpoints ``[(step, dir)]`` sorted by step, and ignored directories with the reason."""
    complete, ignored = [], []
    if not root.is_dir():
        return complete, ignored
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        m = STEP_DIR.match(d.name)
        if d.name.endswith(TMP_SUFFIX):
            ignored.append((d, f"unfinished write ({TMP_SUFFIX})"))
        elif m is None:
            ignored.append((d, "not a step_<N> directory"))
        elif not (d / MARKER).is_file():
            ignored.append((d, f"no {MARKER} marker"))
        else:
            complete.append((int(m.group(1)), d))
    complete.sort()
    return complete, ignored


# --------------------------------------------------------------------------- checksums


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(ckpt: Path) -> list[Path]:
    own = {ckpt / MARKER, ckpt / CHECKSUMS}
    return sorted(p for p in ckpt.rglob("*") if p.is_file() and p not in own)


def write_checksums(ckpt: Path) -> None:
    """Record size and sha256 of every file of a checkpoint being built (before its marker)."""
    sums = {str(p.relative_to(ckpt)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(ckpt)}
    (ckpt / CHECKSUMS).write_text(json.dumps(sums, indent=1, sort_keys=True))


def checksum_problem(ckpt: Path) -> str | None:
    """Why ``ckpt`` fails verification (naming the file), or None when every recorded file matches.
    A checkpoint written before checksums existed has nothing to verify and passes."""
    path = ckpt / CHECKSUMS
    if not path.is_file():
        return None
    try:
        sums = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return f"{path}: unreadable ({err})"
    for rel, want in sorted(sums.items()):
        f = ckpt / rel
        if not f.is_file():
            return f"{f}: missing"
        size = f.stat().st_size
        if size != want["size"]:
            return f"{f}: {size} bytes, {want['size']} when saved (truncated or overwritten)"
        if _sha256(f) != want["sha256"]:
            return f"{f}: sha256 differs from the one recorded at save (corrupted)"
    return None


# --------------------------------------------------------------------------- finding the exported model


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


def _exported_checkpoints(checkpoints: Path) -> tuple[list[tuple[int, Path]], list[str]]:
    """Complete ``step_<N>`` checkpoints holding an exported ``model/``, and why others were skipped."""
    complete, ignored = list_checkpoints(checkpoints)
    skipped = [f"{d.name}: {why}" for d, why in ignored if STEP_DIR.match(d.name)]
    usable = []
    for step, d in complete:
        if _model_dir_in(d / "model") is None:
            skipped.append(f"{d.name}: no exported model/ (train.checkpoint_export off?)")
        else:
            usable.append((step, d / "model"))
    return usable, sorted(skipped)


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
    if (root / CHECKPOINTS).is_dir():
        usable, skipped = _exported_checkpoints(root / CHECKPOINTS)
        if usable:
            return max(usable)[1]
    why = "; ".join([str(comsl_config_problem(root))] + skipped)
    raise CheckpointError(
        f"{root}: not a ComSL checkpoint ({why}); expected an exported model directory "
        "(ComSL config.json + model.safetensors), or a training run directory with one in "
        f"{', '.join(n + '/' for n in RUN_SUBDIRS)} or {CHECKPOINTS}/step_<N>/model/ (with {MARKER})"
    )
