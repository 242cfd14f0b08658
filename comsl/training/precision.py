"""Training precision: which one a device gets for ``train.precision``, and the autocast context.

``fp32`` trains in float32. ``bf16`` trains bf16 weights with float32 master weights and AdamW state in
both engines (the torch engine through ``comsl.training.master_weights``, DeepSpeed itself), the forward
still under ``torch.autocast``. ``fp16`` runs the forward under autocast over float32 weights (torch
engine) with a loss scaler (torch ``GradScaler`` / DeepSpeed's dynamic scaler). The objectives compute
softmax, log-softmax and every loss in float32 whatever the autocast dtype. ``auto`` picks bf16 where
the device has bf16 units, else fp16 on a GPU and fp32 on a CPU. A CPU without bf16 matrix units
(AMX / AVX512-BF16) gets fp32 for ``bf16`` too: emulated bf16 there is slower than fp32.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
"""Values of ``train.precision``."""

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Autocast dtype of each 16-bit precision."""


def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 matrix units that oneDNN uses (AMX tiles or AVX512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if any(hasattr(torch.cpu, name) for name in probes):
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    try:  # older torch: the kernel's CPU flags
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision ``requested`` (one of PRECISIONS) runs at on ``device``: fp32, bf16 or fp16.

    Logs one line when a CPU without bf16 units turns ``bf16``/``auto`` into fp32.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return requested
    if requested in ("bf16", "auto"):
        if device.type == "cpu" and not cpu_has_bf16():
            log.warning("train.precision=%s: this CPU has no bf16 matrix units (AMX / AVX512-BF16); "
                        "training in fp32", requested)
            return "fp32"
        return "bf16"
    return requested


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for a resolved 16-bit ``precision``; a no-op context for fp32."""
    dtype = DTYPES.get(precision)
    if dtype is None or not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
