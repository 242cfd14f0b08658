"""The ComSL multi-task loss: which passes run, and how the named objectives combine.

L = w_asr·L_ASR + w_st·L_ST + w_mt·L_MT + w_cml·L_CML (+ w_ctc·L_CTC + w_match·L_match).

Passes per batch (each only when some objective with a non-zero weight needs it):
  * speech encoder + adapter: once, shared by ASR, ST, CML (STM, ERM), CTC and matching;
  * text encoder over [lang ; speech]: once, shared by ASR and ST (and ERM's speech-only side);
  * text encoder over the transcript (MT): once; it yields L_MT *and* the DDM distribution of L_ST
    (without gradient when w_mt = 0);
  * the frozen MT teacher: without gradient, only when w_mt > 0 and λt > 0;
  * text encoder over [lang ; speech ; masked transcript]: once for MTP, STM_src, STM_tgt, ERM.
Decoder passes with the same targets (ST + STM_tgt + MT; ASR + STM_src + MTP) run as one batched call,
and the LM head runs only on the positions each objective scores.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from comsl.config import ObjectiveConfig
from comsl.errors import ConfigError
from comsl.models.composite import ComSLModel
from comsl.objectives.asr import ASRObjective
from comsl.objectives.cml import (
    ERMObjective,
    MTPObjective,
    STMObjective,
    combine_cml,
    mask_transcript,
    mtp_labels,
    pack_pair,
    unpack_pair,
)
from comsl.objectives.ctc import CTCObjective
from comsl.objectives.matching import MatchingObjective, mismatched_order
from comsl.objectives.mt_reg import MTRegObjective
from comsl.objectives.st_ddm import STDDMObjective


def decode_group(model: ComSLModel, jobs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                 ) -> list[torch.Tensor]:
    """Run several teacher-forced decodes ``(decoder_input_ids (B, L), enc (B, S_i, D), enc_mask (B, S_i))``
    as one batched decoder call (encoder states right-padded to the longest); returns their decoder
    states (B, L, D), before the LM head."""
    if len(jobs) == 1:
        return [model.decode_hidden(*jobs[0])]
    width = max(enc.shape[1] for _, enc, _ in jobs)
    hidden = model.decode_hidden(
        torch.cat([d for d, _, _ in jobs]),
        torch.cat([nn.functional.pad(e, (0, 0, 0, width - e.shape[1])) for _, e, _ in jobs]),
        torch.cat([nn.functional.pad(m, (0, width - m.shape[1])) for _, _, m in jobs]),
    )
    return list(hidden.split([d.shape[0] for d, _, _ in jobs]))


def scored(model: ComSLModel, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LM head only where a token is scored: decoder states (B, L, D) and labels (B, L) (-100 = not scored)
    -> logits (N, V) and labels (N,). At a 250k vocabulary the head costs more than the decoder layers;
    padding, the forced language token and MTP's unmasked positions (85%) never reach it."""
    keep = labels != -100
    return model.lm_logits(hidden[keep]), labels[keep]


class ComSLMultiTaskLoss:
    """Callable ``loss(model, batch, step=None) -> (total, parts)``; parts are named
    asr, st, mt, mtp, stm_src, stm_tgt, erm, cml, ctc, match (only the computed ones).

    ``teacher`` is the frozen stage-1 model (a ComSLModel), needed when w_mt > 0 and λt > 0.
    Raises ConfigError when a needed piece (teacher, mask token, CTC/matching head) is missing.
    """

    def __init__(self, cfg: ObjectiveConfig, *, mask_token_id: int | None, eos_token_id: int,
                 pad_token_id: int, teacher: ComSLModel | None = None):
        self.cfg = cfg
        self.mask_token_id, self.eos_token_id, self.pad_token_id = mask_token_id, eos_token_id, pad_token_id
        self.teacher = teacher
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        if cfg.w_mt > 0 and cfg.lambda_mt > 0 and teacher is None:
            raise ConfigError("objectives.lambda_mt > 0 needs a frozen MT teacher (train.teacher: the stage-1 "
                              "model directory); or set objectives.lambda_mt=0")
        if cfg.w_cml > 0 and mask_token_id is None:
            raise ConfigError("objectives.w_cml > 0 needs a tokenizer with a <mask> token")
        ls = cfg.label_smoothing
        self.asr = ASRObjective(ls)
        self.st = STDDMObjective(cfg.lambda_st, ls)
        self.mt = MTRegObjective(cfg.lambda_mt, ls)
        self.mtp = MTPObjective()
        self.stm_src = STMObjective("stm_src", ls)
        self.stm_tgt = STMObjective("stm_tgt", ls)
        self.erm = ERMObjective()
        self.ctc = CTCObjective(blank_id=pad_token_id, eos_token_id=eos_token_id)
        self.match = MatchingObjective()

    @property
    def speech_weights(self) -> dict[str, float]:
        c = self.cfg
        return {"asr": c.w_asr, "st": c.w_st, "cml": c.w_cml, "ctc": c.w_ctc, "match": c.w_match}

    def __call__(self, model: ComSLModel, batch: dict, step: int | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.cfg
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []
        tr_ids, tr_mask = batch["transcript_ids"], batch["transcript_mask"]
        tg_ids, tg_mask = batch["translation_ids"], batch["translation_mask"]
        tgt_in, tgt_labels = model.teacher_forcing(tg_ids, tg_mask)
        src_in, src_labels = model.teacher_forcing(tr_ids, tr_mask)
        has_speech = "speech" in batch
        use_st = has_speech and c.w_st > 0
        use_asr = has_speech and c.w_asr > 0
        use_cml = has_speech and c.w_cml > 0
        use_erm = use_cml and c.w_erm > 0
        tgt_jobs: dict[str, tuple] = {}  # decodes of the translation, batched together
        src_jobs: dict[str, tuple] = {}  # decodes of the transcript

        # ---- MT pass (also the DDM teacher of ST)
        mt_grad = c.w_mt > 0
        if mt_grad or (use_st and self.st.needs_mt):
            with contextlib.nullcontext() if mt_grad else torch.no_grad():
                mt_enc = model.encode_text(tr_ids, tr_mask).last_hidden_state
            if mt_grad:
                tgt_jobs["mt"] = (tgt_in, mt_enc, tr_mask)
            else:
                with torch.no_grad():
                    mt_logits_nograd, _ = scored(model, model.decode_hidden(tgt_in, mt_enc, tr_mask), tgt_labels)

        # ---- speech passes
        if has_speech and any(w > 0 for w in self.speech_weights.values()):
            senc = model.encode_speech(batch["speech"], batch["speech_mask"])
            embeds, smask = model.speech_inputs_embeds(senc, batch["src_lang_ids"])
            speech_text = None
            if use_st or use_asr or use_erm:
                speech_text = model.encode_embeds(embeds, smask, output_hidden_states=use_erm)
                if use_st:
                    tgt_jobs["st"] = (tgt_in, speech_text.last_hidden_state, smask)
                if use_asr:
                    src_jobs["asr"] = (src_in, speech_text.last_hidden_state, smask)
            if use_cml:
                masked_ids, masked = mask_transcript(tr_ids, tr_mask, c.mask_prob, self.mask_token_id,
                                                     self.eos_token_id)
                packed, pmask, _ = pack_pair(embeds, smask, model.embed_tokens(masked_ids), tr_mask)
                concat = model.encode_embeds(packed, pmask, output_hidden_states=use_erm)
                z_s, z_x = unpack_pair(concat.last_hidden_state, smask, tr_mask)
                tgt_jobs["stm_tgt"] = (tgt_in, z_s, smask)
                src_jobs["stm_src"] = (src_in, z_s, smask)
                src_jobs["mtp"] = (src_in, z_x, tr_mask)
                if use_erm:
                    k = min(c.erm_layer, len(concat.hidden_states) - 1)
                    concat_speech, _ = unpack_pair(concat.hidden_states[k], smask, tr_mask)
                    only = speech_text.hidden_states[k] * smask[..., None].to(concat_speech.dtype)
                    parts["erm"] = self.erm(only, concat_speech, smask)
            if c.w_ctc > 0:
                if model.ctc_head is None:
                    raise ConfigError("objectives.w_ctc > 0 but the model has no CTC head (build it with ctc_head)")
                parts["ctc"] = self.ctc(model.ctc_head(senc.speech_hidden), senc.speech_mask, tr_ids, tr_mask)
                weighted.append(c.w_ctc * parts["ctc"])
            if c.w_match > 0:
                parts["match"] = self._matching(model, embeds, smask, tr_ids, tr_mask)
                weighted.append(c.w_match * parts["match"])

        # ---- batched decodes, the LM head on scored positions only, and the objectives
        hidden = {}
        for jobs in (tgt_jobs, src_jobs):
            if jobs:
                hidden.update(zip(jobs, decode_group(model, list(jobs.values()))))
        if "mt" in hidden:
            mt_logits, labels = scored(model, hidden["mt"], tgt_labels)
            teacher_logits = None
            if self.mt.needs_teacher:
                with torch.no_grad():
                    t_enc = self.teacher.encode_text(tr_ids, tr_mask).last_hidden_state
                    teacher_logits, _ = scored(self.teacher, self.teacher.decode_hidden(tgt_in, t_enc, tr_mask),
                                               tgt_labels)
            parts["mt"] = self.mt(mt_logits, labels, teacher_logits)
            weighted.append(c.w_mt * parts["mt"])
        if use_st:
            st_logits, labels = scored(model, hidden["st"], tgt_labels)
            mt_dist = None
            if self.st.needs_mt:
                mt_dist = mt_logits.detach() if "mt" in hidden else mt_logits_nograd
            parts["st"] = self.st(st_logits, labels, mt_dist)
            weighted.append(c.w_st * parts["st"])
        if use_asr:
            parts["asr"] = self.asr(*scored(model, hidden["asr"], src_labels))
            weighted.append(c.w_asr * parts["asr"])
        if use_cml:
            parts["stm_src"] = self.stm_src(*scored(model, hidden["stm_src"], src_labels))
            parts["stm_tgt"] = self.stm_tgt(*scored(model, hidden["stm_tgt"], tgt_labels))
            parts["mtp"] = self.mtp(*scored(model, hidden["mtp"], mtp_labels(tr_ids, masked)))
            parts["cml"] = combine_cml(parts["stm_src"], parts["stm_tgt"], parts["mtp"], parts.get("erm"), c.w_erm)
            weighted.append(c.w_cml * parts["cml"])
        if not weighted:
            raise ConfigError("every objective weight that applies to this batch is 0: nothing to train "
                              f"({'speech' if has_speech else 'text-only'} batch)")
        total = torch.stack(weighted).sum()
        return total, parts

    def _matching(self, model: ComSLModel, embeds, smask, tr_ids, tr_mask) -> torch.Tensor:
        """Paired and mismatched [speech ; transcript] through the text encoder -> match_head."""
        if model.match_head is None:
            raise ConfigError("objectives.w_match > 0 but the model has no matching head (build it with match_head)")
        if tr_ids.shape[0] < 2:
            return embeds.sum() * 0.0
        order = mismatched_order(tr_ids.shape[0], tr_ids.device)
        text = model.embed_tokens(tr_ids)
        packed, pmask, _ = pack_pair(torch.cat([embeds, embeds]), torch.cat([smask, smask]),
                                     torch.cat([text, text[order]]), torch.cat([tr_mask, tr_mask[order]]))
        hidden = model.encode_embeds(packed, pmask).last_hidden_state
        m = pmask[..., None].to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1)
        scores = model.match_head(pooled).squeeze(-1)
        labels = torch.cat([torch.ones(tr_ids.shape[0]), torch.zeros(tr_ids.shape[0])]).to(scores.device)
        return self.match(scores, labels)
