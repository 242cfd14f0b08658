"""What the trainer trains (:class:`TrainTask`) and ``build_task``: the glue from an ExperimentConfig
to the ComSL model, objectives and data.

Contract the pieces must satisfy (the trainer relies on nothing else):

- ``model``: an ``nn.Module``. Optional: ``part_of(param_name) -> str`` (speech_encoder / adapter /
  text_encoder / text_decoder / other) for per-part LRs and freezing; ``set_trainable(part, bool)``
  for the static ``*_trainable`` switches; ``set_speech_frozen(bool)`` to run the speech blocks
  without gradient while frozen; ``save_pretrained(dir)`` for exports.
- ``loss_fn(model, batch, step) -> (total, parts)``: ``total`` a scalar tensor, ``parts`` a dict of
  scalar tensors logged as ``loss/<name>``. ``step`` is the 0-based index of the optimizer update.
  It may be an ``nn.Module`` (e.g. holding the frozen teacher): the engine moves it to the device.
- ``dataset[i]`` -> one example; ``collate_fn(list_of_examples) -> batch`` (dict of tensors/lists).
- ``sampler``: iterable of index lists (one list per micro-batch, already sharded for this rank);
  after ``set_epoch(e)`` with a new ``e`` a full iteration yields epoch ``e`` from its start, in an
  order that depends only on (seed, epoch). The trainer restores the position itself (``set_epoch``,
  then skipping the batches already consumed) and never calls the sampler's ``load_state_dict``.
- ``collate_fn`` may return None (every utterance of the batch failed to decode): the batch is skipped.
- ``evaluate_fn(model) -> {"bleu": {lang: float}, "avg": float}``: called on every rank (ZeRO-3
  needs them all) under ``torch.no_grad`` in eval mode; rank 0's result is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn

from comsl.config import ExperimentConfig
from comsl.errors import ComSLError


@dataclass(kw_only=True)
class TrainTask:
    """Everything the trainer needs besides the configs."""

    model: nn.Module
    """The model being trained (on CPU; the engine moves it)."""

    loss_fn: Callable
    """``loss_fn(model, batch, step) -> (total, parts)``."""

    dataset: Sequence
    """Training examples, indexed by the sampler."""

    sampler: Any
    """Batch sampler: iterable of index lists with ``set_epoch(e)``."""

    collate_fn: Callable
    """Examples -> batch dict."""

    evaluate_fn: Callable | None = None
    """Dev BLEU: ``evaluate_fn(model) -> {"bleu": {lang: x}, "avg": x}``; None = no evaluation."""

    tokenizer: Any = None
    """Saved with every exported model (``save_pretrained``) when given."""


def build_task(cfg: ExperimentConfig) -> TrainTask:
    """Build the ComSL (``train.stage=comsl``) or MT pre-finetune (``train.stage=mt``) task.

    Still to be finished by the lead once ``comsl.models``, ``comsl.objectives`` and
    ``comsl.data.batching`` exist: build/initialise the model (``train.init_from``), the teacher
    (``train.teacher``), the multi-task loss, the manifest dataset, the length-bucketed sampler sharded
    with :func:`comsl.training.engine.dist_info`, the collator and the dev evaluator.
    """
    raise ComSLError(
        "comsl train: the ComSL task glue (comsl.training.task.build_task) is not finished yet: "
        "it needs comsl.models, comsl.objectives and comsl.data.batching")
