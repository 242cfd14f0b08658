"""16-bit training weights with float32 master copies that the optimizer owns (``train.precision: bf16``).

The model's floating parameters are cast to 16 bit in place (same ``Parameter`` objects, so the caller's
parameter groups and a DDP wrapper built afterwards see them), so a forward under autocast no longer
casts every weight at every use nor every gradient back. Each parameter keeps a float32 master; the
optimizer gets :attr:`MasterWeights.param_groups`, the caller's groups (per-part LRs, weight decay,
``part``) over the masters. A step is ``collect_grads`` -> clip / check the masters' gradients ->
``optimizer.step()`` -> ``push``. Frozen parameters (left out of the groups) keep a master too, so the
float32 view (:meth:`fp32_view`, for checkpoints and exports) is the float32 model exactly, never a 16-bit
copy upcast. Buffers stay float32 (the model's only floating one, mBART's ``final_logits_bias``, then
gives float32 logits, which the objectives upcast anyway).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class MasterWeights:
    """``model``'s floating parameters in ``dtype``, float32 masters for all of them; ``param_groups``
    (the optimizer's groups over ``model``'s parameters) re-pointed at the masters."""

    def __init__(self, model: nn.Module, param_groups: list[dict], dtype: torch.dtype):
        self.model = model
        self.pairs: list[tuple[nn.Parameter, torch.Tensor]] = []  # (16-bit parameter, float32 master)
        master_of: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for p in model.parameters():
                if not p.is_floating_point():
                    continue
                master = p.detach().to(torch.float32, copy=True)
                master_of[id(p)] = master
                self.pairs.append((p, master))
                p.data = p.data.to(dtype)
        self.param_groups = [{**g, "params": [master_of[id(p)] for p in g["params"]]} for g in param_groups]

    def collect_grads(self) -> None:
        """Add every pending 16-bit gradient to its master's float32 gradient and drop it (accumulation
        over micro-batches is then in float32 wherever this runs after each backward)."""
        for p, master in self.pairs:
            if p.grad is None:
                continue
            grad = p.grad.to(torch.float32)
            master.grad = grad if master.grad is None else master.grad.add_(grad)
            p.grad = None

    @torch.no_grad()
    def push(self) -> None:
        """Copy the masters the optimizer just updated (those with a gradient) into the 16-bit parameters;
        call after ``optimizer.step()`` and before ``zero_grad``. A master without a gradient was left
        alone by AdamW (frozen this update), so its copy is already current."""
        for p, master in self.pairs:
            if master.grad is not None:
                p.copy_(master)

    @torch.no_grad()
    def push_all(self) -> None:
        """Copy every master into its 16-bit parameter (after the masters were loaded)."""
        for p, master in self.pairs:
            p.copy_(master)

    @contextlib.contextmanager
    def fp32_view(self):
        """Context in which the model's parameters *are* the float32 masters (same storage): what is
        saved or exported inside it is the float32 model, and what is loaded inside it lands in the
        masters (then call :meth:`push_all`)."""
        saved = [(p, p.data) for p, _ in self.pairs]
        for p, master in self.pairs:
            p.data = master
        try:
            yield
        finally:
            for p, data in saved:
                p.data = data
