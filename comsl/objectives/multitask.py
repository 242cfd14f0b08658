"""The ComSL multi-task loss as plan -> encode -> score (paper §3.3-3.4).

L = w_asr·L_ASR + w_st·L_ST + w_mt·L_MT + w_cml·L_CML (+ w_ctc·L_CTC + w_match·L_match).

1. ``plan``: which passes the non-zero weights need (a zero weight skips its computation);
2. ``model(batch, plan)``: the model runs them (``comsl.models.encodings``) and returns decoder states
   before the LM head, labels, ERM states, CTC logits, matching scores; the frozen MT teacher runs its
   MT pass without autograd state;
3. ``score``: plain loss functions of those tensors, the LM head applied chunk-wise inside the
   cross-entropy (``head_cross_entropy``):
     ASR      CE(P(x | speech), x)
     ST       mixed CE towards sg(P_MT) with λs (decoder distribution matching)
     MT       mixed CE towards the frozen teacher's distribution with λt, over the batch's transcripts and
              stage 2's extra text rows (``batch["mt_extra"]``, ``data.mt_manifest``)
     CML      (STM_src + STM_tgt + MTP) / 3 + w_erm · ERM
"""

from __future__ import annotations

import torch

from comsl.config import ObjectiveConfig
from comsl.errors import ConfigError
from comsl.models.composite import ComSLModel
from comsl.models.encodings import Encodings, Plan
from comsl.objectives.cml import ERM_VARIANTS, combine_cml
from comsl.objectives.cross_entropy import Scored, head_cross_entropies
from comsl.objectives.ctc import ctc_loss
from comsl.objectives.matching import matching_loss


def plan_for(cfg: ObjectiveConfig, *, has_speech: bool, mask_token_id: int | None) -> Plan:
    """The passes the non-zero weights of ``cfg`` need for a batch with or without speech."""
    cml = has_speech and cfg.w_cml > 0
    st = has_speech and cfg.w_st > 0
    return Plan(mt=cfg.w_mt > 0, mt_target=st and cfg.lambda_st > 0 and cfg.w_mt == 0, st=st,
                asr=has_speech and cfg.w_asr > 0, cml=cml, erm=cml and cfg.w_erm > 0, erm_layer=cfg.erm_layer,
                ctc=has_speech and cfg.w_ctc > 0, match=has_speech and cfg.w_match > 0,
                mask_prob=cfg.mask_prob, mask_token_id=mask_token_id)


def score(cfg: ObjectiveConfig, enc: Encodings, model: ComSLModel, batch: dict, *, blank_id: int,
          teacher_states: torch.Tensor | None = None, teacher: ComSLModel | None = None
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total and the named parts (asr, st, mt, mtp, stm_src, stm_tgt, erm, cml, ctc, match:
    those computed) of ``enc``. ``teacher_states`` are the teacher's MT decoder states (for λt > 0).
    Raises ConfigError when no objective applies to the batch."""
    states, labels = enc.states, enc.labels
    scored: dict[str, Scored] = {}
    ls = cfg.label_smoothing
    if "mt" in states:
        soft = dict(soft_hidden=teacher_states, soft_head=teacher.loss_head()) if teacher_states is not None else {}
        scored["mt"] = Scored(states["mt"], labels["mt"], lam=cfg.lambda_mt, label_smoothing=ls, **soft)
    if "st" in states:
        mt = states["mt"] if "mt" in states else states.get("mt_target")
        if mt is not None:  # DDM's target: the batch's own rows (not the extra MT text), at ST's length
            mt = mt[: states["st"].shape[0], : states["st"].shape[1]]
        scored["st"] = Scored(states["st"], labels["st"], soft_hidden=mt, lam=cfg.lambda_st, label_smoothing=ls)
    for name in ("asr", "stm_src", "stm_tgt", "mtp"):
        if name in states:
            scored[name] = Scored(states[name], labels[name], label_smoothing=0.0 if name == "mtp" else ls)
    # one pass of the LM head over every objective's scored positions (one weight gradient)
    parts: dict[str, torch.Tensor] = dict(zip(scored, head_cross_entropies(
        list(scored.values()), model.loss_head(), vocab_size=model.config.text_config.vocab_size))) if scored else {}
    if "mtp" in states:
        if enc.erm is not None:
            parts["erm"] = ERM_VARIANTS[cfg.erm_variant](*enc.erm)
        parts["cml"] = combine_cml(parts["stm_src"], parts["stm_tgt"], parts["mtp"], parts.get("erm"), cfg.w_erm)
    if enc.ctc_logits is not None:
        parts["ctc"] = ctc_loss(enc.ctc_logits, enc.ctc_mask, batch["transcript_ids"], batch["transcript_mask"],
                                blank_id=blank_id, eos_token_id=model.config.text_config.eos_token_id)
    if cfg.w_match > 0 and "speech" in batch:
        parts["match"] = (matching_loss(enc.match_scores) if enc.match_scores is not None
                          else model.match_head.weight.sum() * 0.0)  # one utterance: no negative
    weights = {"ctc": cfg.w_ctc, "match": cfg.w_match, "mt": cfg.w_mt, "st": cfg.w_st, "asr": cfg.w_asr,
               "cml": cfg.w_cml}
    weighted = [weights[name] * parts[name] for name in weights if name in parts]
    if not weighted:
        raise ConfigError("every objective weight that applies to this batch is 0: nothing to train "
                          f"({'speech' if 'speech' in batch else 'text-only'} batch)")
    return torch.stack(weighted).sum(), parts


class ComSLMultiTaskLoss:
    """Callable ``loss(model, batch) -> (total, parts)``; see the module docstring.

    ``teacher`` is the frozen stage-1 model (a ComSLModel), needed when w_mt > 0 and λt > 0; ``to``
    moves it with the student (and casts it to bf16 for bf16 training). Raises ConfigError when a needed piece (teacher, mask token, CTC/matching
    head) is missing.
    """

    def __init__(self, cfg: ObjectiveConfig, *, mask_token_id: int | None, eos_token_id: int,
                 pad_token_id: int, teacher: ComSLModel | None = None):
        self.cfg = cfg
        self.mask_token_id, self.eos_token_id, self.pad_token_id = mask_token_id, eos_token_id, pad_token_id
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        if cfg.w_mt > 0 and cfg.lambda_mt > 0 and teacher is None:
            raise ConfigError("objectives.lambda_mt > 0 needs a frozen MT teacher (train.teacher: the stage-1 "
                              "model directory); or set objectives.lambda_mt=0")
        if cfg.w_cml > 0 and mask_token_id is None:
            raise ConfigError("objectives.w_cml > 0 needs a tokenizer with a <mask> token")

    def to(self, where: torch.device | str | torch.dtype) -> "ComSLMultiTaskLoss":
        """Move the teacher (the loss's only tensors) to a device, or cast it to a dtype (bf16 training)."""
        if self.teacher is not None:
            self.teacher.to(where)
        return self

    def plan(self, has_speech: bool) -> Plan:
        return plan_for(self.cfg, has_speech=has_speech, mask_token_id=self.mask_token_id)

    def __call__(self, model: ComSLModel, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        plan = self.plan("speech" in batch)
        if plan.ctc and model.ctc_head is None:
            raise ConfigError("objectives.w_ctc > 0 but the model has no CTC head (build it with ctc_head)")
        if plan.match and model.match_head is None:
            raise ConfigError("objectives.w_match > 0 but the model has no matching head (build it with match_head)")
        # every objective scored by the LM head gives the tied embedding a dense gradient, so lookups may be sparse
        with model.sparse_embedding_grads(enabled=plan.mt or plan.st or plan.asr or plan.cml):
            enc = model(batch, plan)
        teacher_states = None
        if plan.mt and self.cfg.lambda_mt > 0:
            with torch.no_grad():  # frozen: no autograd state
                teacher_states = self.teacher(batch, Plan(mt=True)).states["mt"]
        return score(self.cfg, enc, model, batch, blank_id=self.pad_token_id, teacher_states=teacher_states,
                     teacher=self.teacher)
