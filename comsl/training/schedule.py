"""Optimizer parameter groups by model part, polynomial decay with warm-up, and speech-encoder freezing.

Paper (stage 2): AdamW β=(0.9, 0.98), weight decay 0.1 except biases and LayerNorm, polynomial decay
(power 2) after a linear warm-up, speech blocks frozen for the first third of training.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from comsl.config import OptimConfig, TrainConfig

PARTS = ("speech_encoder", "adapter", "text_encoder", "text_decoder", "other")
"""Parts a model may report through ``model.part_of(param_name)``."""

SPEECH = "speech_encoder"

TRAINABLE_SWITCHES = {
    "speech_encoder": "speech_trainable",
    "adapter": "adapter_trainable",
    "text_encoder": "text_encoder_trainable",
    "text_decoder": "text_decoder_trainable",
}
"""Model part -> the TrainConfig switch that makes it trainable."""


def part_of(model: nn.Module, name: str) -> str:
    """Part of parameter ``name``: ``model.part_of(name)`` when the model has it, else ``"other"``."""
    fn = getattr(model, "part_of", None)
    if fn is None:
        return "other"
    part = fn(name)
    if part not in PARTS:
        raise ValueError(f"model.part_of({name!r}) returned {part!r}; expected one of {', '.join(PARTS)}")
    return part


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights and any 1-D parameter get no weight decay."""
    lowered = name.lower()
    return param.ndim < 2 or lowered.endswith(".bias") or "norm" in lowered


def apply_trainable_switches(model: nn.Module, train: TrainConfig) -> None:
    """Apply the static ``*_trainable`` switches: ``model.set_trainable(part, flag)`` when available,
    otherwise ``requires_grad`` of the part's parameters (found through ``model.part_of``)."""
    for part, switch in TRAINABLE_SWITCHES.items():
        flag = getattr(train, switch)
        if hasattr(model, "set_trainable"):
            model.set_trainable(part, flag)
        elif not flag:
            for name, p in model.named_parameters():
                if part_of(model, name) == part:
                    p.requires_grad_(False)


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
    for part in PARTS:
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


def freeze_steps(train: TrainConfig) -> int:
    """Number of initial steps during which the speech encoder is frozen."""
    return int(round(train.freeze_speech_fraction * train.max_steps))


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
    times 0 for the speech-encoder group while it is frozen.

    A pure function of the step, so its state is the step alone. ``step()`` advances after an update.
    The groups are read from ``optimizer.param_groups`` at every call because loading an optimizer
    state replaces the group dicts.
    """

    def __init__(self, optimizer: Any, *, warmup_steps: int, max_steps: int, power: float,
                 end_lr: float, freeze_until: int = 0):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.power = power
        self.end_lr = end_lr
        self.freeze_until = freeze_until
        self.current_step = 0

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def speech_frozen(self, step: int | None = None) -> bool:
        """Whether the speech encoder is frozen at ``step`` (default: the coming update)."""
        return (self.current_step if step is None else step) < self.freeze_until

    def lr_for(self, group: dict, step: int) -> float:
        if group.get("part") == SPEECH and self.speech_frozen(step):
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
