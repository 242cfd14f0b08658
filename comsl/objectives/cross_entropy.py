"""LM head + token cross-entropy against a target mixed from the one-hot label and a soft distribution,
computed in chunks of tokens so the (tokens x vocabulary) logits never exist at once.

This one formula serves every text objective: ASR, STM and MTP (λ = 0), ST with decoder distribution
matching (soft = sg(P_MT), λs) and MT with regularisation (soft = P_teacher, λt):
  L = Σ_t Σ_v [(1 - λ)·((1 - ε)·1(y_t = v) + ε/V) + λ·q_t(v)] · -log p_t(v),  averaged over scored tokens,
with ε the label smoothing. p and q come from decoder states through an LM head, chunk by chunk, and
are recomputed in backward, so forward keeps only the states. Log-softmax runs in float32 whatever the
autocast dtype of the head's matmul.

Two implementations of the same formula: a head given as its weight and bias (``LinearHead``, what the
composite passes) runs one fused function over every objective's rows at once, with a hand-written
backward. Per chunk its forward needs only the log-sum-exp, the label's logit, the mean logit (label
smoothing) and q·z (the soft target), because -log p(v) = lse - z_v and Σ_v q(v) = 1; its backward
recomputes the chunk's logits once and forms dL/dz = p - (1-λ)(1-ε)·onehot - (1-λ)ε/V - λq in place,
adding the chunk's weight gradient into one buffer for all objectives. The per-row work runs in float32
over blocks of rows that fit in cache (``BLOCK_ELEMENTS``). Any other callable head (the composite's under
ZeRO-3) takes the generic path: autograd over each chunk under activation checkpointing, which repeats
the forward and keeps every intermediate of log-softmax.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from comsl.models.text_models import LinearHead

Head = Callable[[torch.Tensor], torch.Tensor]
"""An LM head: decoder states (N, D) -> logits (N, V) (``ComSLModel.lm_logits``)."""

LOGITS_PER_CHUNK = 1 << 26
"""Logit elements (tokens x vocabulary) per chunk, ~268 tokens at mBART-50's 250k: 128 MB in bf16 for the
fused path (256 MB of float32 for the generic one). Each chunk adds its product into the (vocabulary x d)
weight gradient, a pass over it: fewer, larger chunks make fewer passes (BENCHMARKS.md)."""


def _chunk_loss(hidden: torch.Tensor, labels: torch.Tensor, soft_hidden: torch.Tensor | None, head: Head,
                soft_head: Head | None, lam: float, label_smoothing: float) -> torch.Tensor:
    """Σ over the chunk's tokens of the mixed-target cross-entropy (hidden (C, D), labels (C,))."""
    logp = F.log_softmax(head(hidden).float(), dim=-1)
    hard = F.nll_loss(logp, labels, reduction="none")
    if label_smoothing > 0:
        hard = (1 - label_smoothing) * hard - label_smoothing * logp.mean(-1)
    if soft_hidden is None:
        return hard.sum()
    with torch.no_grad():  # sg(q): the soft target is a constant
        q = F.softmax(soft_head(soft_hidden).float(), dim=-1)
    return ((1 - lam) * hard - lam * (q * logp).sum(-1)).sum()


def _autocast_on(device: str) -> bool:
    return torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The head matmul's dtype: autocast's where autocast is on (fp16 over float32 weights), else the weight's."""
    if _autocast_on(weight.device.type) and weight.dtype == torch.float32:
        return torch.get_autocast_dtype(weight.device.type)
    return weight.dtype


@dataclass
class Scored:
    """One objective's decoder states and labels for ``head_cross_entropies``; the keyword arguments of
    ``head_cross_entropy``."""

    hidden: torch.Tensor
    labels: torch.Tensor
    soft_hidden: torch.Tensor | None = None
    soft_head: Head | None = None
    lam: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class _Rows:
    """The scored rows of one ``Scored`` inside the concatenated rows of the fused loss."""

    start: int
    stop: int
    coef: tuple[float, float, float]  # (1-λ)(1-ε), (1-λ)ε, λ: weights of -log p(y), the uniform and q
    soft: torch.Tensor | None
    soft_head: Head | None


BLOCK_ELEMENTS = 1 << 19
"""float32 logits per block of rows in the loss's elementwise work on CPU: 2 MB, one core's L2 cache."""


class _Workspace:
    """Buffers of one pass, allocated once and reused by every chunk (on CPU a fresh tensor of this size is
    fresh pages, and faulting them in cost more than the work done in them): the chunk's logits and soft
    logits in the matmul's dtype, and on CPU float32 scratch for one block of rows. The elementwise work runs
    block by block, so each block's dozen passes stay in cache instead of sweeping the chunk in memory."""

    def __init__(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device):
        self.dtype = dtype
        self.block = max(1, BLOCK_ELEMENTS // vocab) if device.type == "cpu" else rows
        self.logits = torch.empty(rows, vocab, dtype=dtype, device=device)
        self._soft: torch.Tensor | None = None  # only for batches with soft targets
        self._scratch: dict[str, torch.Tensor] = {}

    @property
    def soft(self) -> torch.Tensor:
        if self._soft is None:
            self._soft = torch.empty_like(self.logits)
        return self._soft

    def matmul(self, head: Head, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Logits of ``hidden`` (n, D) in ``out[:n]``, the matmul in the workspace's dtype."""
        out = out[:hidden.shape[0]]
        if not isinstance(head, LinearHead):  # a soft head given as any callable
            return out.copy_(head(hidden))
        weight = head.weight.to(self.dtype)
        if head.bias is None:
            return torch.mm(hidden.to(self.dtype), weight.t(), out=out)
        return torch.addmm(head.bias.to(self.dtype), hidden.to(self.dtype), weight.t(), out=out)

    def f32(self, block: torch.Tensor, name: str) -> torch.Tensor:
        """``block`` in float32: itself when it already is (changed in place then), else a scratch copy."""
        if block.dtype == torch.float32:
            return block
        if name not in self._scratch:
            self._scratch[name] = torch.empty(self.block, block.shape[1], dtype=torch.float32, device=block.device)
        return self._scratch[name][:block.shape[0]].copy_(block)


def _softmax_(z: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension in place."""
    z.sub_(z.amax(-1, keepdim=True)).exp_()
    return z.div_(z.sum(-1, keepdim=True))


def _soft_logits(rows: list[_Rows], lo: int, n: int, ws: _Workspace) -> list[tuple[int, int, float]]:
    """Soft-target logits of chunk rows [lo, lo + n) into ``ws.soft`` at their chunk-local rows; returns the
    (start, stop, λ) ranges, chunk-local, that have one."""
    ranges = []
    for r in rows:
        a, b = max(r.start, lo), min(r.stop, lo + n)
        if r.soft is None or a >= b:
            continue
        ws.matmul(r.soft_head, r.soft[a - r.start:b - r.start], ws.soft[a - lo:])
        ranges.append((a - lo, b - lo, r.coef[2]))
    return ranges


def _blocks(n: int, ws: _Workspace, ranges: list[tuple[int, int, float]]):
    """(block slice, [(rows within the block, λ·q in float32)]) over a chunk of ``n`` rows."""
    for b0 in range(0, n, ws.block):
        b1 = min(b0 + ws.block, n)
        parts = [(max(a, b0) - b0, min(b, b1) - b0, lam) for a, b, lam in ranges if max(a, b0) < min(b, b1)]
        block = ws.f32(ws.soft[b0:b1], "soft") if parts else None  # one copy: its rows are distinct views
        yield slice(b0, b1), [(slice(lo, hi), _softmax_(block[lo:hi]).mul_(lam)) for lo, hi, lam in parts]


class _FusedHeadCrossEntropy(torch.autograd.Function):
    """Per-row mixed-target cross-entropy of ``hidden @ weight.T + bias`` (module docstring) for the rows
    of several objectives at once, so the head's weight gradient is formed once. Differentiable in
    ``hidden`` and ``weight``; every label is scored (no -100)."""

    @staticmethod
    def forward(ctx, hidden, weight, head, labels, coef, rows, chunk):
        dtype = _compute_dtype(weight)
        n_all = hidden.shape[0]
        ws = _Workspace(min(chunk, n_all), weight.shape[0], dtype, hidden.device)
        lse = torch.empty(n_all, dtype=torch.float32, device=hidden.device)
        loss = torch.empty_like(lse)
        smoothing = bool((coef[:, 1] > 0).any())
        for lo in range(0, n_all, chunk):
            logits = ws.matmul(head, hidden[lo:lo + chunk], ws.logits)
            for blk, soft in _blocks(logits.shape[0], ws, _soft_logits(rows, lo, logits.shape[0], ws)):
                z, at = ws.f32(logits[blk], "logits"), slice(lo + blk.start, lo + blk.stop)
                # Σ_v target(v)·(lse - z_v), the target's weights summing to 1; lse is added below
                row = -coef[at, 0] * z.gather(1, labels[at, None])[:, 0]
                if smoothing:
                    row -= coef[at, 1] * z.mean(-1)
                for local, q in soft:
                    row[local] -= (q * z[local]).sum(-1)  # in cache (a batched dot is slower here)
                top = z.amax(-1, keepdim=True)
                lse[at] = (top + z.sub_(top).exp_().sum(-1, keepdim=True).log_())[:, 0]  # z is spent here
                loss[at] = row + lse[at]
        ctx.save_for_backward(hidden, labels, coef, lse)
        ctx.head, ctx.rows, ctx.chunk, ctx.dtype, ctx.smoothing = head, rows, chunk, dtype, smoothing
        ctx.autocast = _autocast_on(hidden.device.type)  # soft heads are recomputed under it
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, labels, coef, lse = ctx.saved_tensors
        head, dtype = ctx.head, ctx.dtype
        weight = head.weight.to(dtype)
        ws = _Workspace(min(ctx.chunk, hidden.shape[0]), weight.shape[0], dtype, hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = None  # the first chunk's product, then each chunk added in place (no zero-filled start)
        with torch.no_grad():
            for lo in range(0, hidden.shape[0], ctx.chunk):
                h = hidden[lo:lo + ctx.chunk].to(dtype)
                logits = ws.matmul(head, h, ws.logits)
                with torch.autocast(hidden.device.type, dtype=dtype) if ctx.autocast else contextlib.nullcontext():
                    ranges = _soft_logits(ctx.rows, lo, h.shape[0], ws)
                for blk, soft in _blocks(h.shape[0], ws, ranges):
                    at = slice(lo + blk.start, lo + blk.stop)
                    g = ws.f32(logits[blk], "logits").sub_(lse[at, None]).exp_()  # p, in place
                    # dL/dz = p - (1-λ)(1-ε)·onehot - (1-λ)ε/V - λq
                    g[torch.arange(g.shape[0], device=g.device), labels[at]] -= coef[at, 0]
                    if ctx.smoothing:
                        g -= coef[at, 1:2] / g.shape[1]
                    for local, q in soft:
                        g[local] -= q
                    logits[blk].copy_(g.mul_(grad_loss[at, None]))  # the chunk's logits become dL/dz
                if grad_hidden is not None:
                    grad_hidden[lo:lo + ctx.chunk] = (logits @ weight).to(hidden.dtype)
                if ctx.needs_input_grad[1]:
                    grad_weight = logits.t() @ h if grad_weight is None else grad_weight.addmm_(logits.t(), h)
        if grad_weight is not None:
            grad_weight = grad_weight.to(head.weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def _fusable(head) -> bool:
    """A ``LinearHead`` whose bias is a constant (the fused backward gives it no gradient)."""
    return isinstance(head, LinearHead) and (head.bias is None or not head.bias.requires_grad)


def _fused(scored: list[Scored], head: LinearHead, chunk: int) -> list[torch.Tensor]:
    """``head_cross_entropies`` through one ``_FusedHeadCrossEntropy`` over every objective's scored rows."""
    hidden, labels, coef, rows, start = [], [], [], [], 0
    for s in scored:
        valid = s.labels != -100
        h = s.hidden[valid]
        n = h.shape[0]
        lam = s.lam if s.soft_hidden is not None else 0.0
        c = ((1 - lam) * (1 - s.label_smoothing), (1 - lam) * s.label_smoothing, lam)
        soft = s.soft_hidden[valid].detach() if lam != 0.0 else None
        rows.append(_Rows(start, start + n, c, soft, (s.soft_head or head) if soft is not None else None))
        hidden.append(h)
        labels.append(s.labels[valid])
        coef.append(torch.tensor(c, dtype=torch.float32, device=s.hidden.device).expand(n, 3))
        start += n
    if start == 0:  # nothing scored: zeros that still give the head (tied embedding) a dense gradient
        return [(head.weight.sum() * 0.0).float() for _ in scored]
    loss = _FusedHeadCrossEntropy.apply(torch.cat(hidden), head.weight, head, torch.cat(labels),
                                        torch.cat(coef), rows, chunk)
    return [loss[r.start:r.stop].mean() if r.stop > r.start else s.hidden.sum().float() * 0.0
            for r, s in zip(rows, scored)]


def head_cross_entropies(scored: list[Scored], head: Head, vocab_size: int | None = None) -> list[torch.Tensor]:
    """``head_cross_entropy`` of each ``Scored`` (one 0-dim float32 mean each). A ``LinearHead`` computes all
    of them in one fused pass over their concatenated rows (one weight gradient for all); another head
    scores them one by one."""
    if vocab_size is None:
        with torch.no_grad():
            vocab_size = head(scored[0].hidden.reshape(-1, scored[0].hidden.shape[-1])[:1]).shape[-1]
    chunk = max(1, LOGITS_PER_CHUNK // vocab_size)
    if _fusable(head):
        return _fused(scored, head, chunk)
    return [_checkpointed(s, head, chunk) for s in scored]


def _checkpointed(s: Scored, head: Head, chunk: int) -> torch.Tensor:
    """One objective through autograd over each chunk under activation checkpointing (any head)."""
    valid = s.labels != -100
    hidden, labels = s.hidden[valid], s.labels[valid]
    if hidden.shape[0] == 0:
        return hidden.sum().float() * 0.0
    use_soft = s.soft_hidden is not None and s.lam != 0.0
    soft = s.soft_hidden[valid].detach() if use_soft else None
    soft_head = (s.soft_head or head) if use_soft else None
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        part = slice(start, start + chunk)
        args = (hidden[part], labels[part], None if soft is None else soft[part], head, soft_head, s.lam,
                s.label_smoothing)
        total = total + (checkpoint(_chunk_loss, *args, use_reentrant=False, preserve_rng_state=False)
                         if torch.is_grad_enabled() else _chunk_loss(*args))
    return total / hidden.shape[0]


def head_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, head: Head, *,
                       soft_hidden: torch.Tensor | None = None, soft_head: Head | None = None, lam: float = 0.0,
                       label_smoothing: float = 0.0, vocab_size: int | None = None) -> torch.Tensor:
    """Mean over tokens with ``labels != -100`` of the mixed-target cross-entropy of ``head(hidden)``.

    hidden (..., D) decoder states and labels (...) (-100 = not scored); soft_hidden (..., D) states the
    soft distribution q = softmax(soft_head(soft_hidden)) is read from at the same positions (never
    differentiated). ``lam`` = 0 (or no soft_hidden) is plain cross-entropy; 1 is against q alone.
    ``vocab_size`` sets the chunk length (default: one probe of the head). Returns a 0-dim float32
    tensor (0 if nothing is scored).
    """
    return head_cross_entropies([Scored(hidden, labels, soft_hidden, soft_head, lam, label_smoothing)], head,
                                vocab_size)[0]
