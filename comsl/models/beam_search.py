"""Batched beam search over the composite's text decoder, token-identical to transformers' ``generate``.

It reproduces the arithmetic of transformers' vectorised beam search (``GenerationMixin._beam_search``
with ``early_stopping=True``; greedy search for one beam) step by step: log-softmax in float32, forced
``</s>`` start then forced target-language token (log-prob set to 0, like ``ForcedBOSTokenLogitsProcessor``),
optional forced ``</s>`` at the last position (``ForcedEOSTokenLogitsProcessor``), the top ``2·K``
continuations, finished hypotheses scored ``sum log p / generated_len ** length_penalty``, a sentence done
once it holds K finished hypotheses. It calls the same decoder forward with the same key/value cache, so the
logits are the same numbers. It is faster because it does less work, not different work:

* a sentence whose K hypotheses are finished leaves the batch (``generate`` keeps decoding it until the
  longest sentence ends): its rows are dropped from the inputs and from both caches;
* the cross-attention keys/values are computed once and never reordered (all beams of a sentence share
  them; ``generate`` gathers them again at every step);
* the LM head is skipped at the two forced positions, and there are no logits-processor / stopping-criteria
  objects, static ``max_length`` buffers or per-step input preparation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from comsl.models.text_models import lm_logits

# transformers' beam search marks impossible candidates by adding this; reproduced for identical ties
_NEG = -1.0e9

# Generation-config settings that add logits processors this search does not implement.
UNSUPPORTED_GENERATION_SETTINGS = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0, "min_new_tokens": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None, "renormalize_logits": False,
    "forced_decoder_ids": None, "exponential_decay_length_penalty": None, "diversity_penalty": 0.0,
    "num_beam_groups": 1, "constraints": None, "force_words_ids": None,
}


def unsupported_settings(generation_config) -> list[str]:
    """Names of ``generation_config`` fields set to something this beam search does not reproduce
    (the composite then falls back to transformers' ``generate``)."""
    names = []
    for name, neutral in UNSUPPORTED_GENERATION_SETTINGS.items():
        value = getattr(generation_config, name, neutral)
        if value is not None and value != neutral and not (name == "min_length" and value == 0):
            names.append(name)
    return names


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Select along dim 1 of (b, n, ...) with idx (b, m) -> (b, m, ...)."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


@dataclass
class _Beams:
    """Search state of the b sentences still decoding, K beams each."""

    active: torch.Tensor  # (b,) index of each sentence in the batch
    seqs: torch.Tensor  # (b, K, max_length) running hypotheses
    run_scores: torch.Tensor  # (b, K) their summed log-probs
    src_beam: torch.Tensor  # (b, K) the beam each running hypothesis came from at the last step
    fin_seqs: torch.Tensor  # (b, K, max_length) the K best finished hypotheses
    fin_scores: torch.Tensor  # (b, K) their length-normalised scores
    fin_flag: torch.Tensor  # (b, K) whether the slot holds a finished hypothesis
    fin_len: torch.Tensor  # (b, K) step at which each finished
    can_improve: torch.Tensor  # (b, 1) whether a running beam can still beat the worst finished one

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the sentences ``rows`` (indices into the active ones)."""
        for name, value in vars(self).items():
            setattr(self, name, value[rows])


def _start(batch: int, k: int, max_length: int, decoder_start_id: int, fill: int, device) -> _Beams:
    seqs = torch.full((batch, k, max_length), fill, dtype=torch.long, device=device)
    seqs[:, :, 0] = decoder_start_id
    run_scores = torch.zeros((batch, k), dtype=torch.float, device=device)
    run_scores[:, 1:] = _NEG  # only the first beam may expand at step one (all beams are equal)
    return _Beams(active=torch.arange(batch, device=device), seqs=seqs, run_scores=run_scores,
                  src_beam=torch.zeros((batch, k), dtype=torch.long, device=device), fin_seqs=seqs.clone(),
                  fin_scores=torch.full((batch, k), _NEG, dtype=torch.float, device=device),
                  fin_flag=torch.zeros((batch, k), dtype=torch.bool, device=device),
                  fin_len=torch.zeros((batch, k), dtype=torch.long, device=device),
                  can_improve=torch.ones((batch, 1), dtype=torch.bool, device=device))


def _next_log_probs(text_model, hidden: torch.Tensor, forced: int | None) -> torch.Tensor:
    """(b*K, V) float32 log-probs of the next token; a forced token gets 0, all others -inf (no LM head)."""
    if forced is None:
        return nn.functional.log_softmax(lm_logits(text_model, hidden).float(), dim=-1)
    log_probs = torch.full((hidden.shape[0], text_model.config.vocab_size), -float("inf"), device=hidden.device)
    log_probs[:, forced] = 0
    return log_probs


def _advance(s: _Beams, log_probs: torch.Tensor, cur_len: int, max_length: int, eos_id: int,
             length_penalty: float) -> None:
    """One step of transformers' vectorised beam search: the 2K best continuations, the K best that did
    not finish run on, the newly finished merge into the K best finished."""
    b, k = s.run_scores.shape
    vocab = log_probs.shape[-1]
    scores = (log_probs.view(b, k, vocab) + s.run_scores[:, :, None]).view(b, k * vocab)
    top_scores, top_idx = torch.topk(scores, k=2 * k)  # one eos id: 2K keep K non-finished ones
    top_beam, top_tok = top_idx // vocab, top_idx % vocab
    top_seqs = _gather(s.seqs, top_beam)
    top_seqs[:, :, cur_len] = top_tok
    hits = top_tok == eos_id if cur_len + 1 < max_length else torch.ones_like(top_tok, dtype=torch.bool)

    run_cand = top_scores + hits.to(torch.float32) * _NEG
    nxt = torch.topk(run_cand, k=k)[1]
    s.seqs, s.run_scores, s.src_beam = _gather(top_seqs, nxt), _gather(run_cand, nxt), _gather(top_beam, nxt)

    just = hits & (torch.arange(2 * k, device=hits.device) < k)[None, :]
    normed = top_scores / ((cur_len + 1 - 1) ** length_penalty)
    normed += s.fin_flag.all(dim=-1, keepdim=True).to(torch.float32) * _NEG
    normed += (~s.can_improve).to(torch.float32) * _NEG
    normed += (~just) * _NEG
    merged = torch.topk(torch.cat((s.fin_scores, normed), dim=1), k=k)[1]
    s.fin_seqs = _gather(torch.cat((s.fin_seqs, top_seqs), dim=1), merged)
    s.fin_scores = _gather(torch.cat((s.fin_scores, normed), dim=1), merged)
    s.fin_flag = _gather(torch.cat((s.fin_flag, just), dim=1), merged)
    s.fin_len = _gather(torch.cat((s.fin_len, torch.full_like(top_tok, cur_len)), dim=1), merged)

    best_running = s.run_scores[:, :1] / ((cur_len + 1 - 1) ** length_penalty)
    worst_finished = torch.where(s.fin_flag, s.fin_scores.min(dim=1, keepdim=True)[0], _NEG)
    s.can_improve = s.can_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)


@torch.no_grad()
def beam_search(
    text_model: PreTrainedModel,
    encoder_hidden: torch.Tensor,
    encoder_mask: torch.Tensor,
    *,
    decoder_start_id: int,
    forced_bos_id: int | None,
    eos_id: int,
    pad_id: int | None,
    forced_eos_id: int | None = None,
    num_beams: int = 5,
    max_new_tokens: int = 128,
    length_penalty: float = 1.0,
    sync: Callable[[bool], bool] | None = None,
) -> torch.Tensor:
    """Beam search with early stopping over encoder states.

    text_model: an mBART / M2M100 ``*ForConditionalGeneration`` (its decoder and LM head are used).
    encoder_hidden (B, S, D), encoder_mask (B, S) 1 on real positions.
    Returns (B, 1 + L) token ids ``[decoder_start, forced_bos, ..., </s>, pad..]``: for each sentence the
    best finished hypothesis, right-padded (with ``pad_id``, or ``eos_id`` when the pad id is 0 or None,
    as ``generate`` does) to the longest; L <= max_new_tokens.
    ``sync(done) -> all_done``: lock-step decoding across ranks (ZeRO-3 gathers parameters inside
    every module's forward, so all ranks must run the same forwards). Called on every rank once per step
    with whether this rank's sentences are all finished; decoding stops when it returns True. Until then a
    finished rank keeps stepping its last sentence (output discarded) through the same modules.
    Raises ValueError for num_beams < 1 or max_new_tokens < 1.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"beam_search needs num_beams >= 1 and max_new_tokens >= 1, got {num_beams}, {max_new_tokens}")
    k, batch, device = num_beams, encoder_hidden.shape[0], encoder_hidden.device
    decoder, max_length, fill = text_model.get_decoder(), 1 + max_new_tokens, pad_id if pad_id else eos_id
    best = torch.full((batch, max_length), fill, dtype=torch.long, device=device)  # written as sentences end
    best_len = torch.zeros(batch, dtype=torch.long, device=device)
    s = _start(batch, k, max_length, decoder_start_id, fill, device)
    enc = encoder_hidden.repeat_interleave(k, dim=0)
    enc_mask = encoder_mask.repeat_interleave(k, dim=0)  # as generate passes it: token-identical
    cache = EncoderDecoderCache(DynamicCache(config=text_model.config), DynamicCache(config=text_model.config))
    tokens = s.seqs[:, :, 0].reshape(-1, 1)
    idle = False  # this rank is done and only keeps pace with the others (sync)
    for cur_len in range(1, max_length):
        hidden = decoder(input_ids=tokens, encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
                         cache=cache, use_cache=True).last_hidden_state[:, -1]
        forced = forced_bos_id if cur_len == 1 else None
        if forced_eos_id is not None and cur_len == max_length - 1:
            forced = forced_eos_id
        _advance(s, _next_log_probs(text_model, hidden, forced), cur_len, max_length, eos_id, length_penalty)
        done = s.fin_flag.all(dim=-1) | ~s.can_improve[:, 0] if cur_len + 1 < max_length else None
        if (done is None or done.any()) and not idle:  # finished sentences leave the batch and both caches
            done = torch.ones_like(s.can_improve[:, 0]) if done is None else done
            best[s.active[done]], best_len[s.active[done]] = s.fin_seqs[done, 0], s.fin_len[done, 0]
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                if sync is None:
                    break
                idle, keep = True, keep.new_zeros(1)
            s.keep(keep)
            rows = (keep[:, None] * k + torch.arange(k, device=device)).reshape(-1)
            enc, enc_mask = enc[rows], enc_mask[rows]
            cache.cross_attention_cache.reorder_cache(rows)
            row_base = keep * k
        else:
            row_base = torch.arange(s.active.shape[0], device=device) * k
        if sync is not None and sync(idle):
            break
        # one gather both drops finished sentences and follows each kept beam to its parent
        cache.self_attention_cache.reorder_cache((row_base[:, None] + s.src_beam).reshape(-1))
        tokens = s.seqs[:, :, cur_len].reshape(-1, 1)
    return best[:, : 1 + int(best_len.max())]
