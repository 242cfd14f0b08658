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
) -> torch.Tensor:
    """Beam search with early stopping over encoder states.

    text_model: an mBART / M2M100 ``*ForConditionalGeneration`` (its decoder and LM head are used).
    encoder_hidden (B, S, D), encoder_mask (B, S) 1 on real positions.
    Returns (B, 1 + L) token ids ``[decoder_start, forced_bos, ..., </s>, pad..]``: for each sentence the
    best finished hypothesis, right-padded (with ``pad_id``, or ``eos_id`` when the pad id is 0 or None,
    as ``generate`` does) to the longest; L <= max_new_tokens.
    Raises ValueError for num_beams < 1 or max_new_tokens < 1.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"beam_search needs num_beams >= 1 and max_new_tokens >= 1, got {num_beams}, {max_new_tokens}")
    k = num_beams
    batch, device = encoder_hidden.shape[0], encoder_hidden.device
    decoder = text_model.get_decoder()
    max_length = 1 + max_new_tokens
    fill = pad_id if pad_id else eos_id
    n_keep = 2 * k  # one eos id: keep 2K candidates so K non-finished ones always remain
    top_k_mask = torch.arange(n_keep, device=device) < k

    # Outputs, written when a sentence leaves the batch.
    best = torch.full((batch, max_length), fill, dtype=torch.long, device=device)
    best_len = torch.zeros(batch, dtype=torch.long, device=device)

    # Per active sentence (b of them) and beam: running hypotheses and the K best finished ones.
    active = torch.arange(batch, device=device)
    seqs = torch.full((batch, k, max_length), fill, dtype=torch.long, device=device)
    seqs[:, :, 0] = decoder_start_id
    run_scores = torch.zeros((batch, k), dtype=torch.float, device=device)
    run_scores[:, 1:] = _NEG  # only the first beam may expand at step one (all beams are equal)
    fin_seqs = seqs.clone()
    fin_scores = torch.full((batch, k), _NEG, dtype=torch.float, device=device)
    fin_flag = torch.zeros((batch, k), dtype=torch.bool, device=device)
    fin_len = torch.zeros((batch, k), dtype=torch.long, device=device)
    can_improve = torch.ones((batch, 1), dtype=torch.bool, device=device)

    enc = encoder_hidden.repeat_interleave(k, dim=0)
    enc_mask = encoder_mask.repeat_interleave(k, dim=0)
    cache = EncoderDecoderCache(DynamicCache(config=text_model.config), DynamicCache(config=text_model.config))
    tokens = seqs[:, :, 0].reshape(-1, 1)
    cur_len = 1
    while True:
        b = active.shape[0]
        hidden = decoder(input_ids=tokens, encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
                         cache=cache, use_cache=True).last_hidden_state[:, -1]
        forced = None
        if cur_len == 1 and forced_bos_id is not None:
            forced = forced_bos_id
        if forced_eos_id is not None and cur_len == max_length - 1:
            forced = forced_eos_id
        if forced is None:
            log_probs = nn.functional.log_softmax(lm_logits(text_model, hidden).float(), dim=-1)
        else:  # the forced token gets log-prob 0 and the LM head is not needed
            log_probs = torch.full((hidden.shape[0], text_model.config.vocab_size), -float("inf"), device=device)
            log_probs[:, forced] = 0
        vocab = log_probs.shape[-1]
        scores = (log_probs.view(b, k, vocab) + run_scores[:, :, None]).view(b, k * vocab)

        # the 2K best continuations over all beams of each sentence
        top_scores, top_idx = torch.topk(scores, k=n_keep)
        top_beam = top_idx // vocab
        top_tok = top_idx % vocab
        top_seqs = _gather(seqs, top_beam)
        top_seqs[:, :, cur_len] = top_tok
        hits = top_tok == eos_id
        if cur_len + 1 >= max_length:
            hits = torch.ones_like(hits)

        # running beams: the K best that did not just finish
        run_cand = top_scores + hits.to(torch.float32) * _NEG
        nxt = torch.topk(run_cand, k=k)[1]
        seqs = _gather(top_seqs, nxt)
        run_scores = _gather(run_cand, nxt)
        src_beam = _gather(top_beam, nxt)

        # finished hypotheses: merge the newly finished among the top K into the K best
        just = hits & top_k_mask[None, :]
        normed = top_scores / ((cur_len + 1 - 1) ** length_penalty)
        normed += fin_flag.all(dim=-1, keepdim=True).to(torch.float32) * _NEG
        normed += (~can_improve).to(torch.float32) * _NEG
        normed += (~just) * _NEG
        merged = torch.topk(torch.cat((fin_scores, normed), dim=1), k=k)[1]
        fin_seqs = _gather(torch.cat((fin_seqs, top_seqs), dim=1), merged)
        fin_scores = _gather(torch.cat((fin_scores, normed), dim=1), merged)
        fin_flag = _gather(torch.cat((fin_flag, just), dim=1), merged)
        fin_len = _gather(torch.cat((fin_len, torch.full_like(top_tok, cur_len)), dim=1), merged)

        cur_len += 1
        best_running = run_scores[:, :1] / ((cur_len - 1) ** length_penalty)
        worst_finished = torch.where(fin_flag, fin_scores.min(dim=1, keepdim=True)[0], _NEG)
        can_improve = can_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)

        done = fin_flag.all(dim=-1) | ~can_improve[:, 0]
        if cur_len >= max_length:
            done = torch.ones_like(done)
        if done.any():
            best[active[done]] = fin_seqs[done, 0]
            best_len[active[done]] = fin_len[done, 0]
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            active, seqs, run_scores, src_beam = active[keep], seqs[keep], run_scores[keep], src_beam[keep]
            fin_seqs, fin_scores, fin_flag, fin_len = fin_seqs[keep], fin_scores[keep], fin_flag[keep], fin_len[keep]
            can_improve = can_improve[keep]
            rows = (keep[:, None] * k + torch.arange(k, device=device)).reshape(-1)
            enc, enc_mask = enc[rows], enc_mask[rows]
            cache.cross_attention_cache.reorder_cache(rows)
            row_base = keep * k
        else:
            row_base = torch.arange(b, device=device) * k
        # one gather both drops finished sentences and follows each kept beam to its parent
        cache.self_attention_cache.reorder_cache((row_base[:, None] + src_beam).reshape(-1))
        tokens = seqs[:, :, cur_len - 1].reshape(-1, 1)

    return best[:, : 1 + int(best_len.max())]
