"""Optimizer parameter groups by model part, and polynomial decay with warm-up.

Paper (stage 2): AdamW β=(0.9, 0.98), weight decay 0.1 except biases and LayerNorm, polynomial decay
(power 2) after a linear warm-up. Frozen parts get LR 0 from the freeze policy (``training/freezing.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable

import torch
from torch import nn

from comsl.config import OptimConfig
from comsl.parts import OTHER, PARTS, SPEECH
from comsl.training.freezing import part_of


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights and any 1-D parameter get no weight decay."""
    lowered = name.lower()
    return param.ndim < 2 or lowered.endswith(".bias") or "norm" in lowered


def param_groups(model: nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups, one per (part, decay) pair that has trainable parameters.

    Each group carries ``part`` and ``peak_lr`` (``optim.lr_per_part[part]`` or ``optim.lr``) so the
    schedule can scale it; parameters with ``requires_grad=False`` are left out.
    """
    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (part_of(model, name), not no_decay(name, p))
        buckets.setdefault(key, []).append(p)
    groups = []
    for part in (*PARTS, OTHER):
        for decay in (True, False):
            params = buckets.get((part, decay))
            if not params:
                continue
            peak = optim.lr_per_part.get(part, optim.lr)
            groups.append({
                "params": params,
                "part": part,
                "peak_lr": peak,
                "lr": peak,
                "weight_decay": optim.weight_decay if decay else 0.0,
            })
    if not groups:
        raise ValueError("the model has no trainable parameters (check the *_trainable switches)")
    return groups


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, power: float) -> float:
    """Fraction of the peak LR used for update ``step`` (0-based): linear warm-up to 1, then
    ``(1 - progress) ** power`` down to 0 at ``max_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return (1.0 - progress) ** power


class PolynomialDecaySchedule:
    """Sets every group's ``lr`` for the coming update: ``end + (peak - end) * lr_factor(step)``,
    0 for the groups of parts ``frozen(step)`` names (the freeze policy, ``comsl.training.freezing``).

    A pure function of the step, so its state is the step alone. ``step()`` advances after an update.
    The groups are read from ``optimizer.param_groups`` at every call because loading an optimizer
    state replaces the group dicts.
    """

    def __init__(self, optimizer: Any, *, warmup_steps: int, max_steps: int, power: float,
                 end_lr: float, frozen: Callable[[int], Collection[str]] = lambda step: ()):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.power = power
        self.end_lr = end_lr
        self.frozen = frozen
        self.current_step = 0

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def lr_for(self, group: dict, step: int) -> float:
        if group.get("part") in self.frozen(step):
            return 0.0
        peak = group["peak_lr"]
        end = min(self.end_lr, peak)
        factor = lr_factor(step, warmup_steps=self.warmup_steps, max_steps=self.max_steps, power=self.power)
        if step < self.warmup_steps:
            return peak * factor
        return end + (peak - end) * factor

    def apply(self) -> None:
        """Write the LRs of the coming update into the optimizer's groups."""
        for group in self.param_groups:
            group["lr"] = self.lr_for(group, self.current_step)

    def step(self) -> None:
        """Advance one update and write the new LRs."""
        self.current_step += 1
        self.apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.param_groups]

    def state_dict(self) -> dict[str, int]:
        return {"current_step": self.current_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.current_step = int(state["current_step"])
        self.apply()


def main_lr(groups: Iterable[dict]) -> float:
    """LR to display: the first non-speech group's, else the first group's."""
    groups = list(groups)
    for g in groups:
        if g.get("part") != SPEECH:
            return float(g["lr"])
    return float(groups[0]["lr"])
