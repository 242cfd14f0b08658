"""What the trainer trains (:class:`TrainTask`) and ``build_task``: the glue from an ExperimentConfig
to the ComSL model, objectives and data.

Contract the pieces must satisfy (the trainer relies on nothing else):

- ``model``: an ``nn.Module``. Optional: ``part_of(param_name) -> str`` (speech_encoder / adapter /
  text_encoder / text_decoder / other) for per-part LRs and freezing; ``set_trainable(part, bool)``
  for the static ``*_trainable`` switches; ``set_speech_frozen(bool)`` to run the speech blocks
  without gradient while frozen; ``save_pretrained(dir)`` for exports.
- ``loss_fn(model, batch) -> (total, parts)``: ``total`` a scalar tensor, ``parts`` a dict of
  scalar tensors logged as ``loss/<name>``. When it has a ``to(device)`` method (the ComSL loss moves
  its frozen teacher with it) the engine calls it.
- ``dataset[i]`` -> one example; ``collate_fn(list_of_examples) -> batch`` (dict of tensors/lists).
- ``sampler``: iterable of index lists (one list per micro-batch, already sharded for this rank);
  after ``set_epoch(e)`` with a new ``e`` a full iteration yields epoch ``e`` from its start, in an
  order that depends only on (seed, epoch). The trainer restores the position itself (``set_epoch``,
  then skipping the batches already consumed) and never calls the sampler's ``load_state_dict``.
- ``collate_fn`` may return None (every utterance of the batch failed to decode): the batch is skipped.
- ``mt_text`` (optional): a second, text-only data stream; the trainer attaches its next batch to every
  training batch as ``batch["mt_extra"]`` and saves its position (epoch, batch) with its own.
- ``evaluate_fn(model) -> {"bleu": {lang: float}, "avg": float}``: called on every rank (ZeRO-3
  needs them all) under ``torch.no_grad`` in eval mode; rank 0's result is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from comsl.config import ExperimentConfig, ObjectiveConfig
from comsl.data.batching import Collator, LengthBucketSampler
from comsl.data.manifest import read_manifest
from comsl.data.dataset import SpeechDataset, TextPairDataset
from comsl.data.features import build_frontend
from comsl.data.tokenizer import load_tokenizer
from comsl.errors import ConfigError, DataError
from comsl.languages import parse_langs
from comsl.models import ComSLModel
from comsl.models.build import build_model
from comsl.models.speech_cache import cache_speech_encoder
from comsl.objectives import ComSLMultiTaskLoss
from comsl.run_layout import resolve_checkpoint
from comsl.training.checkpoint import seed_everything
from comsl.training.engine import dist_info

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TextBatches:
    """A text-only stream of batches drawn alongside the training batches (stage 2's extra MT text)."""

    dataset: Sequence
    """Text examples, indexed by the sampler."""

    sampler: Any
    """Batch sampler over ``dataset`` with ``set_epoch(e)``, as ``TrainTask.sampler``."""

    collate_fn: Callable
    """Examples -> text batch dict (``transcript_ids/_mask``, ``translation_ids/_mask``)."""


@dataclass(kw_only=True)
class TrainTask:
    """Everything the trainer needs besides the configs."""

    model: nn.Module
    """The model being trained (on CPU; the engine moves it)."""

    loss_fn: Callable
    """``loss_fn(model, batch) -> (total, parts)``."""

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

    mt_text: TextBatches | None = None
    """Extra text for the MT task, one batch per training batch as ``batch["mt_extra"]``; None = none."""


def resolve_tokenizer_dir(cfg: ExperimentConfig) -> str:
    """Where the tokenizer comes from: ``model.tokenizer``, else the stage-1 model (``train.init_from``),
    else the pretrained text model. Raises ConfigError when none is set."""
    for candidate in (cfg.model.tokenizer, cfg.train.init_from, cfg.model.text_pretrained):
        if candidate:
            return candidate
    raise ConfigError("model.tokenizer: required when neither train.init_from nor model.text_pretrained "
                      "names a directory holding a tokenizer")


def stage_objectives(cfg: ExperimentConfig) -> ObjectiveConfig:
    """Stage 1 (``mt``) is plain fine-tuning of the text model on transcript -> translation (paper §3.4);
    stage 2 (``comsl``) uses ``cfg.objectives`` as written."""
    if cfg.train.stage == "mt":
        return ObjectiveConfig(w_asr=0.0, w_st=0.0, w_mt=1.0, w_cml=0.0, lambda_mt=0.0,
                               label_smoothing=cfg.objectives.label_smoothing)
    return cfg.objectives


def load_language_blocks(model: ComSLModel, directory: str) -> None:
    """Initialise the text encoder-decoder from an exported (stage-1) ComSL model, strictly; the speech
    blocks keep what ``model.speech_pretrained`` gave them. Raises CheckpointError on any mismatch."""
    from comsl.models.build import load_part

    path = resolve_checkpoint(directory)
    tied = set(getattr(model.text_model, "all_tied_weights_keys", {}) or {})
    load_part(model.text_model, path, "language blocks", tied, within="text_model.")
    model.text_model.tie_weights()


def build_task(cfg: ExperimentConfig) -> TrainTask:
    """Build the ComSL (``train.stage=comsl``) or MT pre-finetune (``train.stage=mt``) task:
    tokenizer -> model (+ stage-1 language blocks) -> teacher -> loss -> data -> dev evaluation."""
    seed_everything(cfg.train.seed)
    if cfg.data.mt_manifest and not Path(cfg.data.mt_manifest).is_file():
        raise ConfigError(f"data.mt_manifest: {cfg.data.mt_manifest}: file not found (the mini recipe writes "
                          "<manifests>/text_train.tsv in run.sh stage 1); fix the path or set it to null")
    rank, world_size, _ = dist_info()
    tokenizer = load_tokenizer(resolve_tokenizer_dir(cfg))
    objectives = stage_objectives(cfg)
    speech = cfg.train.stage == "comsl"

    model = build_model(cfg.model, tokenizer, ctc_head=objectives.w_ctc > 0, match_head=objectives.w_match > 0)
    if cfg.train.init_from:
        load_language_blocks(model, cfg.train.init_from)
    if speech and cfg.train.cache_frozen_speech:
        cache_speech_encoder(model, int(cfg.train.speech_cache_mb * 2**20))
    teacher = None
    if speech and objectives.w_mt > 0 and objectives.lambda_mt > 0:
        if not cfg.train.teacher:
            raise ConfigError("train.teacher: the frozen MT teacher (stage-1 model directory) is required when "
                              "objectives.w_mt > 0 and objectives.lambda_mt > 0")
        teacher = ComSLModel.from_pretrained(resolve_checkpoint(cfg.train.teacher))
        ours, theirs = model.config.text_config.vocab_size, teacher.config.text_config.vocab_size
        if ours != theirs:
            raise ConfigError(f"train.teacher: {cfg.train.teacher} has a vocabulary of {theirs}, this model {ours} "
                              "(model.tokenizer); the teacher must be the stage-1 model of the same tokenizer")
    loss = ComSLMultiTaskLoss(objectives, mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, teacher=teacher)

    entries = _manifest_entries(cfg.data.train_manifest, cfg.data.langs)
    max_text = model.config.text_config.max_position_embeddings - 2
    if speech:
        dataset = SpeechDataset(entries, tokenizer, cache_bytes=int(cfg.data.audio_cache_mb * 2**20),
                                max_fail_fraction=cfg.data.max_fail_fraction)
        dataset.drop_long_text(max_text)
        audio_lengths = dataset.audio_lengths()
        frontend = build_frontend(model.config.speech_frontend, n_mels=model.config.num_mel_bins or 80)
    else:
        dataset = TextPairDataset(entries, tokenizer)
        dataset.drop_long_text(max_text)
        audio_lengths, frontend = None, None
    d = cfg.data
    sampler = LengthBucketSampler(dataset.token_lengths(), audio_lengths, max_tokens=d.max_tokens_per_batch,
                                  max_frames=d.max_frames_per_batch, num_buckets=d.num_buckets,
                                  num_token_buckets=d.num_token_buckets, seed=cfg.train.seed, rank=rank,
                                  buckets=[(b.max_frames, b.max_tokens, b.batch_size) for b in d.buckets],
                                  world_size=world_size)
    mt_text = None
    if speech and cfg.data.mt_manifest:
        mt_text = _mt_text(cfg, tokenizer, max_text, objectives, rank, world_size)
    return TrainTask(model=model, loss_fn=loss, dataset=dataset, sampler=sampler,
                     collate_fn=Collator(tokenizer.pad_token_id, frontend),
                     evaluate_fn=_evaluator(cfg, tokenizer, speech), tokenizer=tokenizer, mt_text=mt_text)


def _mt_text(cfg: ExperimentConfig, tokenizer, max_text: int, objectives: ObjectiveConfig, rank: int,
             world_size: int) -> TextBatches | None:
    """Stage 2's extra MT text (``data.mt_manifest``, restricted to ``data.langs``), batched by token length
    as stage 1 batches it and sharded like the training sampler; None when no L_MT would read it."""
    d = cfg.data
    if objectives.w_mt <= 0:
        log.warning("data.mt_manifest is not used: objectives.w_mt is 0 (the extra text only feeds L_MT)")
        return None
    dataset = TextPairDataset(_manifest_entries(d.mt_manifest, d.langs), tokenizer)
    dataset.drop_long_text(max_text)
    sampler = LengthBucketSampler(dataset.token_lengths(), None, max_tokens=d.mt_tokens_per_batch,
                                  num_buckets=d.num_buckets, num_token_buckets=1, seed=cfg.train.seed,
                                  rank=rank, world_size=world_size)
    return TextBatches(dataset=dataset, sampler=sampler, collate_fn=Collator(tokenizer.pad_token_id))


def _manifest_entries(path: str, langs: list[str]) -> list[dict]:
    """Manifest rows, restricted to ``langs`` (CoVoST codes) when given. Raises DataError when a requested
    language has no rows, or nothing is left."""
    entries = read_manifest(path)
    if langs:
        wanted = parse_langs(langs)
        present = {e["src_lang"] for e in entries}
        missing = [lang for lang in wanted if lang not in present]
        if missing:
            raise DataError(f"{path}: no utterances for data.langs {', '.join(missing)} "
                            f"(the manifest has {', '.join(sorted(present))})")
        entries = [e for e in entries if e["src_lang"] in wanted]
    if not entries:
        raise DataError(f"{path}: no utterances to train on")
    return entries


def _evaluator(cfg: ExperimentConfig, tokenizer, speech: bool):
    """Periodic dev BLEU (greedy or ``train.eval_beam``), plus BLEU on a fixed sample of training
    utterances (``data.train_sample_utterances``) to see whether the model uses its input at all."""
    from comsl.evaluation.decode import DecodeConfig
    from comsl.evaluation.dev import DevEvaluator, TextDevEvaluator

    if not cfg.data.dev_manifest:
        return None
    decode = DecodeConfig(beam=cfg.train.eval_beam, max_new_tokens=cfg.data.eval_max_new_tokens)
    kind = DevEvaluator if speech else TextDevEvaluator
    langs = cfg.data.langs or None
    dev = kind.from_manifest(cfg.data.dev_manifest, tokenizer, decode, langs, cfg.data.dev_max_utterances)
    sample = None
    if cfg.data.train_sample_utterances:
        sample = kind.from_manifest(cfg.data.train_manifest, tokenizer, decode, langs,
                                    cfg.data.train_sample_utterances)

    def evaluate(model) -> dict:
        result = dev(model)
        if sample is not None:
            result["extra"] = {"train_sample/bleu_avg": sample(model)["avg"]}
        return result

    return evaluate
