"""Model FLOPs of one full ComSL training step, counted from the shapes (no profiler).

Per pass: 2 x (matmul parameters of the blocks it runs) x (real positions through them), plus
attention 4 x n x m x d per layer (Q·K^T and A·V over n queries and m keys); a trained pass costs 3x
its forward (backward ≈ 2 x forward), a pass without gradient (the frozen teacher, the DDM MT pass when
w_mt = 0) 1x. Positions are the real (unpadded) ones from the batch masks, so padding is never counted
as useful work (the speech lengths follow Whisper's front end: one stride-2 conv). Matmul parameters are the weights and biases of every ``nn.Linear`` / ``nn.Conv1d``;
embeddings are lookups, norms and activations are not counted. The passes are those of
``comsl.objectives.multitask`` (one entry per pass it runs for the given weights).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from comsl.config import ObjectiveConfig
from comsl.models.length_adapter import downsample_mask


def matmul_params(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> int:
    """Weights + biases of the Linear / Conv1d layers in ``module`` (not those inside ``skip``)."""
    skipped = {id(p) for s in skip for p in s.parameters()}
    return sum(p.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d))
               for p in m.parameters(recurse=False) if id(p) not in skipped)


def _encoder(p: int, layers: int, d: int, n: torch.Tensor) -> float:
    """Forward FLOPs of a self-attention stack over sequences of real lengths ``n`` (B,)."""
    n = n.double()
    return float(2 * p * n.sum() + 4 * layers * d * (n * n).sum())


def _decoder(p: int, layers: int, d: int, n: torch.Tensor, m: torch.Tensor) -> float:
    """Forward FLOPs of a decoder stack: ``n`` target positions attending to ``m`` encoder positions."""
    n, m = n.double(), m.double()
    return float(2 * p * n.sum() + 4 * layers * d * ((n * n).sum() + (n * m).sum()))


def comsl_step_flops(model, batch: dict, cfg: ObjectiveConfig | None = None) -> dict[str, float]:
    """Model FLOPs of one training step of the full ComSL loss on ``batch``, by pass (key ``total``)."""
    cfg = cfg or ObjectiveConfig()
    tc, sc = model.config.text_config, model.config.speech_config
    d = tc.d_model
    enc, dec = model.text_encoder, model.text_model.get_decoder()
    p_enc, p_dec = matmul_params(enc), matmul_params(dec)
    p_head = tc.vocab_size * d  # tied LM head: a (d x V) matmul per scored position
    p_speech = matmul_params(model.speech_encoder)
    ad = model.adapter  # ffn_in at the speech rate, conv1 halves it, ffn_mid, conv2 halves again
    p_adapter_rate = (matmul_params(ad.ffn_in), matmul_params(ad.conv1) + matmul_params(ad.ffn_mid),
                      matmul_params(ad.conv2))
    # Whisper's stride-2 conv, then the adapter's two stride-2 convs (shapes only: works on "meta" models)
    s_mask = downsample_mask(batch["speech_mask"])
    s = s_mask.sum(1)  # speech-encoder positions
    a = downsample_mask(downsample_mask(s_mask)).sum(1) + 1  # [lang ; adapter output]
    t = batch["transcript_mask"].sum(1)
    y = batch["translation_mask"].sum(1)
    scored_t, scored_y = float((t - 1).sum()), float((y - 1).sum())  # the forced language token is never scored
    L_e, L_d = tc.encoder_layers, tc.decoder_layers
    fwd: dict[str, tuple[float, int]] = {}  # pass -> (forward FLOPs, 3 trained / 1 no grad)
    if cfg.w_mt > 0 or cfg.lambda_st > 0:
        fwd["mt"] = (_encoder(p_enc, L_e, d, t) + _decoder(p_dec, L_d, d, y, t) + 2 * p_head * scored_y,
                     3 if cfg.w_mt > 0 else 1)
    if cfg.w_mt > 0 and cfg.lambda_mt > 0:
        fwd["teacher"] = (fwd["mt"][0], 1)
    # speech encoder (its stride-1 first conv counted at the half rate: < 1% of the stack) + adapter
    adapter = 2 * float(s.sum()) * (p_adapter_rate[0] + p_adapter_rate[1] / 2 + p_adapter_rate[2] / 4)
    fwd["speech"] = (_encoder(p_speech, sc.encoder_layers, sc.d_model, s) + adapter, 3)
    if cfg.w_st > 0 or cfg.w_asr > 0:
        fwd["speech_text_encoder"] = (_encoder(p_enc, L_e, d, a), 3)
    if cfg.w_st > 0:
        fwd["st"] = (_decoder(p_dec, L_d, d, y, a) + 2 * p_head * scored_y, 3)
    if cfg.w_asr > 0:
        fwd["asr"] = (_decoder(p_dec, L_d, d, t, a) + 2 * p_head * scored_t, 3)
    if cfg.w_cml > 0:
        masked = cfg.mask_prob * float((t - 2).clamp(min=0).sum())  # expected masked tokens (MTP scores these)
        fwd["cml_encoder"] = (_encoder(p_enc, L_e, d, a + t), 3)
        fwd["stm_tgt"] = (_decoder(p_dec, L_d, d, y, a) + 2 * p_head * scored_y, 3)
        fwd["stm_src"] = (_decoder(p_dec, L_d, d, t, a) + 2 * p_head * scored_t, 3)
        fwd["mtp"] = (_decoder(p_dec, L_d, d, t, t) + 2 * p_head * masked, 3)
    out = {name: f * k for name, (f, k) in fwd.items()}
    out["total"] = math.fsum(out.values())
    # executed beyond the model FLOPs: the chunked LM head + cross-entropy recomputes each trained head
    # forward in backward, and evaluates soft targets (DDM, teacher) inside it, in forward and recompute
    head = {"mt": scored_y, "st": scored_y, "asr": scored_t, "stm_tgt": scored_y, "stm_src": scored_t}
    rerun = sum(head[n] for n in head if n in fwd and fwd[n][1] == 3)
    rerun += masked if "mtp" in fwd else 0
    if "st" in fwd and cfg.lambda_st > 0:
        rerun += (2 if cfg.w_mt > 0 else 1) * scored_y
    if "teacher" in fwd:
        rerun += scored_y
    out["recompute"] = 2 * p_head * rerun
    return out


def matmul_flops_per_s(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` on this process's threads."""
    import time

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up (oneDNN picks its kernel)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
