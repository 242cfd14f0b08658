"""Writing and reading checkpoints: atomic saves, checksums, structural checks, retention, RNG state and
model export. The layout (names, marker, listing) is ``comsl.run_layout``'s.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from comsl.errors import CheckpointError
from comsl.run_layout import MARKER, TMP_SUFFIX, list_checkpoints, write_checksums

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 7919
"""Rank r seeds its RNGs with ``seed + RANK_SEED_STRIDE * r``: a prime, so ranks of nearby seeds differ."""

EPOCH_SEED_STRIDE = 1000
"""Per-epoch generators are seeded ``seed * EPOCH_SEED_STRIDE + epoch``: distinct for runs of < 1000 epochs."""


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every RNG the training consumes, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank`` of a run seeded ``seed``."""
    return seed + RANK_SEED_STRIDE * rank


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of a generator used only in epoch ``epoch`` (data order, loader workers)."""
    return seed * EPOCH_SEED_STRIDE + epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- structure / config checks


def structure_differences(saved: dict[str, list[int]], current: dict[str, list[int]]) -> list[str]:
    """Human-readable differences between two name -> shape maps (empty when they match)."""
    diffs = []
    for name in sorted(set(saved) - set(current)):
        diffs.append(f"{name}: in the checkpoint, not in the model")
    for name in sorted(set(current) - set(saved)):
        diffs.append(f"{name}: in the model, not in the checkpoint")
    for name in sorted(set(saved) & set(current)):
        if list(saved[name]) != list(current[name]):
            diffs.append(f"{name}: checkpoint shape {tuple(saved[name])} vs model shape {tuple(current[name])}")
    return diffs


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every leaf that differs."""
    a, b = _flatten(saved), _flatten(current)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def check_structure(ckpt: Path, current: dict[str, list[int]]) -> None:
    """Raise CheckpointError listing every parameter whose name or shape differs from the model."""
    path = ckpt / "structure.json"
    if not path.is_file():
        raise CheckpointError(f"{ckpt}: structure.json missing; not a comsl checkpoint")
    diffs = structure_differences(json.loads(path.read_text()), current)
    if diffs:
        shown = diffs[:20] + ([f"... and {len(diffs) - 20} more"] if len(diffs) > 20 else [])
        raise CheckpointError(
            f"{ckpt}: the checkpoint does not match the model built from the config ({len(diffs)} "
            f"difference{'s' if len(diffs) > 1 else ''}):\n  " + "\n  ".join(shown)
            + "\nUse the config the run was started with, or a new train.out_dir.")


# --------------------------------------------------------------------------- writing


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def read_json(path: Path) -> Any:
    """Parsed JSON of a checkpoint file; CheckpointError naming it when missing or malformed."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from err


def write_common_files(tmp: Path, *, trainer_state: dict, structure: dict, run_config: dict) -> None:
    """Files rank 0 writes into a checkpoint being built."""
    write_json(tmp / "trainer_state.json", trainer_state)
    write_json(tmp / "structure.json", structure)
    (tmp / "config.yaml").write_text(yaml.safe_dump(run_config, sort_keys=False))


def finalize(tmp: Path, final: Path) -> None:
    """Record checksums, write the marker, then make the checkpoint visible under its final name in one
    rename."""
    write_checksums(tmp)
    (tmp / MARKER).write_text("ok\n")
    if final.exists():
        remove_checkpoint(final)
    tmp.rename(final)


def remove_checkpoint(d: Path) -> None:
    """Delete a checkpoint marker first, so an interrupted deletion leaves an incomplete directory
    (ignored everywhere), never a complete-looking one with files missing."""
    (d / MARKER).unlink(missing_ok=True)
    shutil.rmtree(d, ignore_errors=True)


def _dev_bleu(d: Path) -> float | None:
    try:
        return read_json(d / "trainer_state.json").get("dev_bleu_avg")
    except CheckpointError:
        return None  # damaged (e.g. a deletion interrupted before the marker went): never ranked best


def retain(root: Path, keep_last: int, keep_best: int) -> list[Path]:
    """Delete complete checkpoints that are neither among the last ``keep_last`` nor the best
    ``keep_best`` by dev BLEU; the newest is always kept. Returns what was deleted."""
    complete, _ = list_checkpoints(root)
    if not complete:
        return []
    keep = {d for _, d in complete[-max(keep_last, 1):]}
    scored = []
    for step, d in complete:
        bleu = _dev_bleu(d)
        if bleu is not None:
            scored.append((bleu, step, d))
    scored.sort(key=lambda x: (-x[0], x[1]))
    keep |= {d for _, _, d in scored[:keep_best]}
    deleted = []
    for _, d in complete:
        if d not in keep:
            remove_checkpoint(d)
            deleted.append(d)
    return deleted


def export_model(model: nn.Module, target: Path, tokenizer: Any = None) -> None:
    """Write a self-contained model directory: ``model.save_pretrained`` when the model has it, else
    ``model.safetensors`` of its state; plus the tokenizer. Written beside ``target`` and renamed."""
    tmp = target.with_name(target.name + TMP_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(str(tmp))
    else:
        from safetensors.torch import save_model
        save_model(model, str(tmp / "model.safetensors"))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(tmp))
    old = target.with_name(target.name + ".old")
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def load_torch_state(path: Path | str, map_location: Any = "cpu", allowed: list[type] = ()) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, containers and the ``allowed`` classes only, so a
    planted pickle runs nothing. Raises CheckpointError naming the file when it is refused or corrupt."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError (zip), EOFError (empty), OSError
        raise CheckpointError(f"{path}: cannot be loaded ({_reason(err)}); it is corrupt or holds objects "
                              "other than tensors (nothing from it was run)") from err


def _reason(err: Exception) -> str:
    """The informative line of a torch.load error (its first lines are generic advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip().split(". Please use")[0]
    return lines[0][:200] if lines else type(err).__name__


def load_rank_state(ckpt: Path, rank: int) -> dict | None:
    path = ckpt / f"rank_{rank}.pt"
    if not path.is_file():
        return None
    return load_torch_state(path)
