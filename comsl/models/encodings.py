"""The training forward: the encoder and decoder passes a batch's active objectives need.

``Plan`` says which passes run (built from the non-zero loss weights by ``comsl.objectives``);
``encode_batch`` runs them and returns ``Encodings``: decoder states *before* the LM head per task
plus their labels, ERM's layer-k states, CTC logits and matching scores. The losses are plain
functions of these tensors (``comsl.objectives.multitask``).

Passes per batch (each only when the plan asks):
  * speech encoder + adapter: once, shared by ASR, ST, CML, CTC and matching;
  * text encoder over [lang ; speech]: once, shared by ASR and ST (and ERM's speech-only side);
  * text encoder over the transcript (MT): with gradient for L_MT, or without (``mt_target``) when only
    DDM needs the MT distribution; L_MT's rows are the batch's B transcripts followed by the extra text
    rows of ``batch["mt_extra"]`` (stage 2's ``data.mt_manifest``), right-padded to the longest, and DDM
    reads only the first B;
  * text encoder over [lang ; speech ; masked transcript]: once for MTP, STM_src, STM_tgt, ERM.
Decoder passes with the same targets (MT + ST + STM_tgt; ASR + STM_src + MTP) run as one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from comsl.models.cml_inputs import mask_transcript, pack_pair, unpack_pair

if TYPE_CHECKING:
    from comsl.models.composite import ComSLModel

TRANSLATION_TASKS = ("mt", "mt_target", "st", "stm_tgt")
"""Decodes whose target is the translation (their labels are the translation's)."""


@dataclass(frozen=True)
class Plan:
    """Which passes one training forward runs."""

    mt: bool = False
    """Text -> translation with gradient (L_MT)."""
    mt_target: bool = False
    """Text -> translation without gradient: the DDM target of ST when L_MT is off."""
    st: bool = False
    """Speech -> translation."""
    asr: bool = False
    """Speech -> transcript."""
    cml: bool = False
    """The concatenated [speech ; masked transcript] pass: MTP, STM_src, STM_tgt."""
    erm: bool = False
    """Layer-k states of the speech-only and concatenated passes (needs ``cml``)."""
    erm_layer: int = 4
    """Text-encoder layer of ERM (1-based; clipped to the depth)."""
    ctc: bool = False
    """CTC logits over the speech-encoder output."""
    match: bool = False
    """Speech-text matching scores of paired and mismatched pairs."""
    mask_prob: float = 0.15
    """Share of transcript tokens masked for MTP."""
    mask_token_id: int | None = None
    """The ``<mask>`` id (required by ``cml``)."""

    @property
    def speech(self) -> bool:
        """Whether any speech pass runs."""
        return self.st or self.asr or self.cml or self.ctc or self.match


@dataclass
class Encodings:
    """What one training forward produced."""

    states: dict[str, torch.Tensor] = field(default_factory=dict)
    """Task -> decoder states (B, L, D) before the LM head: mt, mt_target, st, asr, stm_src, stm_tgt, mtp;
    ``mt`` is (B + E, L', D) with E extra text rows after the batch's own (``mt_extra``)."""
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    """Task -> labels (B, L) of those states (-100 = not scored)."""
    erm: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    """Layer-k states (B, T, D) of the speech-only pass and of the speech part of the concatenated pass,
    and their mask (B, T)."""
    ctc_logits: torch.Tensor | None = None
    """CTC head over speech-encoder frames (B, T, V)."""
    ctc_mask: torch.Tensor | None = None
    """(B, T) 1 on real frames."""
    match_scores: torch.Tensor | None = None
    """Matching logits (2B,): paired rows, then mismatched."""


def decode_group(model: ComSLModel, jobs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                 ) -> list[torch.Tensor]:
    """Run several teacher-forced decodes ``(decoder_input_ids (B_i, L_i), enc (B_i, S_i, D), enc_mask (B_i, S_i))``
    as one batched decoder call (decoder inputs and encoder states right-padded to the longest: the causal
    decoder's first L_i states do not see the padding after them); returns their decoder states
    (B_i, L_i, D), before the LM head."""
    if len(jobs) == 1:
        return [model.decode_hidden(*jobs[0])]
    width = max(enc.shape[1] for _, enc, _ in jobs)
    length = max(d.shape[1] for d, _, _ in jobs)
    hidden = model.decode_hidden(
        torch.cat([nn.functional.pad(d, (0, length - d.shape[1]), value=model.config.text_config.pad_token_id)
                   for d, _, _ in jobs]),
        torch.cat([nn.functional.pad(e, (0, 0, 0, width - e.shape[1])) for _, e, _ in jobs]),
        torch.cat([nn.functional.pad(m, (0, width - m.shape[1])) for _, _, m in jobs]),
    )
    return [h[:, : d.shape[1]] for h, (d, _, _) in zip(hidden.split([d.shape[0] for d, _, _ in jobs]), jobs)]


def mt_rows(batch: dict, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_MT's input: transcript ids/mask and translation ids/mask (B + E, L) of the batch's B pairs followed
    by the E extra text pairs of ``batch["mt_extra"]`` (none without it), right-padded to the longest."""
    keys = ("transcript_ids", "transcript_mask", "translation_ids", "translation_mask")
    extra = batch.get("mt_extra")
    if extra is None:
        return tuple(batch[k] for k in keys)
    out = []
    for k in keys:
        a, b = batch[k], extra[k]
        width, value = max(a.shape[1], b.shape[1]), pad_id if k.endswith("_ids") else 0
        out.append(torch.cat([nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in (a, b)]))
    return tuple(out)


def encode_batch(model: ComSLModel, batch: dict, plan: Plan) -> Encodings:
    """Run the passes of ``plan`` over ``batch`` (keys ``transcript_ids/_mask``, ``translation_ids/_mask``,
    and for speech ``speech``, ``speech_mask``, ``src_lang_ids``). Speech passes are skipped for a
    text-only batch."""
    out = Encodings()
    tr_ids, tr_mask = batch["transcript_ids"], batch["transcript_mask"]
    tgt_in, tgt_labels = model.teacher_forcing(batch["translation_ids"], batch["translation_mask"])
    src_in, src_labels = model.teacher_forcing(tr_ids, tr_mask)
    tgt_jobs: dict[str, tuple] = {}  # decodes of the translation, batched together
    src_jobs: dict[str, tuple] = {}  # decodes of the transcript
    if plan.mt:
        mt_ids, mt_mask, mt_tgt, mt_tgt_mask = mt_rows(batch, model.config.text_config.pad_token_id)
        mt_in, out.labels["mt"] = model.teacher_forcing(mt_tgt, mt_tgt_mask)
        tgt_jobs["mt"] = (mt_in, model.encode_text(mt_ids, mt_mask).last_hidden_state, mt_mask)
    elif plan.mt_target:
        with torch.no_grad():  # a constant target: no autograd state
            mt_enc = model.encode_text(tr_ids, tr_mask).last_hidden_state
            out.states["mt_target"] = model.decode_hidden(tgt_in, mt_enc, tr_mask)
    if "speech" in batch and plan.speech:
        _speech_passes(model, batch, plan, out, tgt_jobs, src_jobs, tgt_in, src_in)
    for jobs in (tgt_jobs, src_jobs):
        if jobs:
            out.states.update(zip(jobs, decode_group(model, list(jobs.values()))))
    for task in out.states:
        out.labels.setdefault(task, tgt_labels if task in TRANSLATION_TASKS else src_labels)
    return out


def _speech_passes(model: ComSLModel, batch: dict, plan: Plan, out: Encodings, tgt_jobs: dict, src_jobs: dict,
                   tgt_in: torch.Tensor, src_in: torch.Tensor) -> None:
    """Speech encoder + adapter, the speech-only and concatenated text-encoder passes; decodes are queued."""
    tr_ids, tr_mask = batch["transcript_ids"], batch["transcript_mask"]
    senc = model.encode_speech(batch["speech"], batch["speech_mask"])
    embeds, smask = model.speech_inputs_embeds(senc, batch["src_lang_ids"])
    speech_text = None
    if plan.st or plan.asr or plan.erm:
        speech_text = model.encode_embeds(embeds, smask, output_hidden_states=plan.erm)
        if plan.st:
            tgt_jobs["st"] = (tgt_in, speech_text.last_hidden_state, smask)
        if plan.asr:
            src_jobs["asr"] = (src_in, speech_text.last_hidden_state, smask)
    if plan.cml:
        eos = model.config.text_config.eos_token_id
        masked_ids, masked = mask_transcript(tr_ids, tr_mask, plan.mask_prob, plan.mask_token_id, eos)
        packed, pmask = pack_pair(embeds, smask, model.embed_tokens(masked_ids), tr_mask)
        concat = model.encode_embeds(packed, pmask, output_hidden_states=plan.erm)
        z_s, z_x = unpack_pair(concat.last_hidden_state, smask, tr_mask)
        tgt_jobs["stm_tgt"] = (tgt_in, z_s, smask)
        src_jobs["stm_src"] = (src_in, z_s, smask)
        src_jobs["mtp"] = (src_in, z_x, tr_mask)
        out.labels["mtp"] = tr_ids.masked_fill(~masked, -100)  # scored only where the input was masked
        if plan.erm:
            k = min(plan.erm_layer, len(concat.hidden_states) - 1)
            concat_speech, _ = unpack_pair(concat.hidden_states[k], smask, tr_mask)
            only = speech_text.hidden_states[k] * smask[..., None].to(concat_speech.dtype)
            out.erm = (only, concat_speech, smask)
    if plan.ctc:
        out.ctc_logits, out.ctc_mask = model.ctc_head(senc.speech_hidden), senc.speech_mask
    if plan.match and tr_ids.shape[0] >= 2:  # negatives need a second utterance
        out.match_scores = _match_scores(model, embeds, smask, tr_ids, tr_mask)


def _match_scores(model: ComSLModel, embeds, smask, tr_ids, tr_mask) -> torch.Tensor:
    """Paired and mismatched (each utterance with the next one's transcript) [speech ; transcript]
    through the text encoder, mean-pooled -> match_head: (2B,) logits."""
    order = torch.roll(torch.arange(tr_ids.shape[0], device=tr_ids.device), shifts=-1)
    text = model.embed_tokens(tr_ids)
    packed, pmask = pack_pair(torch.cat([embeds, embeds]), torch.cat([smask, smask]),
                              torch.cat([text, text[order]]), torch.cat([tr_mask, tr_mask[order]]))
    hidden = model.encode_embeds(packed, pmask).last_hidden_state
    m = pmask[..., None].to(hidden.dtype)
    return model.match_head((hidden * m).sum(1) / m.sum(1)).squeeze(-1)
