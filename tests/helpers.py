"""Inputs and one-task losses shared by the model tests (plain functions, not fixtures)."""

from __future__ import annotations

import torch

from comsl.config import ObjectiveConfig
from comsl.objectives import ComSLMultiTaskLoss

LENGTHS = {"whisper": [230, 97], "w2v_bert": [70, 33], "wav2vec2": [9000, 4100], "hubert": [9000, 4100]}
"""Two utterance lengths per front end (log-mel frames, fbank frames or samples)."""


def speech_input(kind: str, lengths: list[int], seed: int = 0):
    """Random speech of the front end ``kind`` needs, zero-padded, with its mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    shape = {"whisper": (len(lengths), 80, width), "w2v_bert": (len(lengths), width, 160)}.get(
        kind, (len(lengths), width))
    x = torch.randn(shape, generator=g)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    if kind == "whisper":
        x = x * mask[:, None, :]
    elif kind == "w2v_bert":
        x = x * mask[..., None]
    else:
        x = x * mask
    return x, mask


def text_batch(tokenizer):
    """Two transcripts (fr, de) and translations: (tr, tr_mask, tg, tg_mask, src_lang_ids)."""
    from comsl.data.batching import pad_ids
    from comsl.data.processor import encode

    tr, tr_mask = pad_ids([encode(tokenizer, "le chat est assis", "fr"),
                           encode(tokenizer, "der Hund", "de")], tokenizer.pad_token_id)
    tg, tg_mask = pad_ids([encode(tokenizer, "the cat sat", "en"),
                           encode(tokenizer, "the dog sleeps in the garden", "en")], tokenizer.pad_token_id)
    src = torch.tensor([tr[0, 0], tr[1, 0]])
    return tr, tr_mask, tg, tg_mask, src


def speech_batch(tokenizer, x, mask) -> dict:
    """A training batch of speech ``x``/``mask`` with ``text_batch``'s texts."""
    tr, tr_mask, tg, tg_mask, src = text_batch(tokenizer)
    return dict(speech=x, speech_mask=mask, src_lang_ids=src, transcript_ids=tr, transcript_mask=tr_mask,
                translation_ids=tg, translation_mask=tg_mask)


def task_loss(tokenizer, task: str = "st"):
    """``loss(model, batch) -> total`` of one task alone (st | asr | mt): its mean token cross-entropy."""
    weights = dict(w_asr=0.0, w_st=0.0, w_mt=0.0, w_cml=0.0, lambda_st=0.0, lambda_mt=0.0)
    weights[f"w_{task}"] = 1.0
    loss = ComSLMultiTaskLoss(ObjectiveConfig(**weights), mask_token_id=tokenizer.mask_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return lambda model, batch: loss(model, batch)[0]
