"""The freeze policy: which model parts train at each update, in one place for both engines.

Two rules (paper §3.4: the speech blocks are frozen for the first third of training):
  * static ``train.*_trainable`` switches: a switched-off part has ``requires_grad=False`` for the whole
    run and is left out of the optimizer;
  * the speech blocks frozen for the first ``round(freeze_speech_fraction · max_steps)`` updates.
A part frozen at an update gets (a) no gradient: the trainer has the model run it without autograd
(``model.set_speech_frozen``), which also saves its backward, and (b) learning rate 0 in the schedule, so
neither AdamW's step nor its decoupled weight decay moves it in either engine (DeepSpeed's ZeRO optimizer
sees zeros where the torch engine sees no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from comsl.config import TrainConfig
from comsl.parts import OTHER, PARTS, SPEECH, TRAINABLE_SWITCHES


def part_of(model: nn.Module, name: str) -> str:
    """Part of parameter ``name``: ``model.part_of(name)`` when the model has it, else ``OTHER``.
    Raises ValueError for a part outside ``comsl.parts.PARTS``."""
    fn = getattr(model, "part_of", None)
    if fn is None:
        return OTHER
    part = fn(name)
    if part not in PARTS and part != OTHER:
        raise ValueError(f"model.part_of({name!r}) returned {part!r}; expected one of {', '.join(PARTS)}, {OTHER}")
    return part


@dataclass(frozen=True)
class FreezePolicy:
    """Which parts are frozen at each update."""

    static: frozenset[str]
    """Parts frozen for the whole run (their ``*_trainable`` switch is off)."""
    speech_until: int
    """Updates (0-based) before this one run with the speech blocks frozen."""

    @classmethod
    def from_config(cls, train: TrainConfig, model: nn.Module) -> "FreezePolicy":
        """The policy of ``train`` for ``model`` (no speech window when the model has no speech part)."""
        static = frozenset(part for part, switch in TRAINABLE_SWITCHES.items() if not getattr(train, switch))
        has_speech = any(part_of(model, n) == SPEECH for n, _ in model.named_parameters())
        until = int(round(train.freeze_speech_fraction * train.max_steps)) if has_speech else 0
        return cls(static=static, speech_until=until)

    def frozen(self, step: int) -> frozenset[str]:
        """Parts frozen at update ``step`` (0-based)."""
        return self.static | {SPEECH} if step < self.speech_until else self.static

    def apply_static(self, model: nn.Module) -> None:
        """``requires_grad`` of every part from the static switches: ``model.set_trainable(part, flag)``
        when available, else through ``model.part_of``."""
        for part in PARTS:
            trainable = part not in self.static
            if hasattr(model, "set_trainable"):
                model.set_trainable(part, trainable)
            elif not trainable:
                for name, p in model.named_parameters():
                    if part_of(model, name) == part:
                        p.requires_grad_(False)
