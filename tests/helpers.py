"""Inputs and one-task losses shared by the model tests, and a catcher of transformers' warnings (plain
functions, not fixtures)."""

from __future__ import annotations

import contextlib
import logging
import warnings

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


class _Collect(logging.Handler):
    def __init__(self, messages: list[str]):
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record):
        self.messages.append(f"[{record.name}] {record.getMessage()}")


@contextlib.contextmanager
def transformers_warnings():
    """Collects what transformers warns inside the block: its log records at WARNING and above and the Python
    warnings issued from its files. Yields the list of messages, complete when the block ends."""
    import transformers  # noqa: F401  (it adds warning_once to logging.Logger)

    messages: list[str] = []
    # warning_once remembers what it printed in this process: forget it, or an earlier test hides the message
    logging.Logger.warning_once.cache_clear()
    handler = _Collect(messages)
    hf_logger = logging.getLogger("transformers")  # transformers logs through its own, non-propagating root
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
    finally:
        hf_logger.removeHandler(handler)
    messages.extend(f"{w.category.__name__}: {w.message}" for w in caught
                    if "transformers" in w.filename or "transformers" in str(w.message))
