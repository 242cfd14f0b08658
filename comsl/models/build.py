"""Builders: compose a ComSL model from backbone configs, then (a separate step) load pretrained parts.

``build_model`` reads only configs (from a ``ModelConfig`` and the tokenizer), constructs a randomly
initialised composite, and, when the config names pretrained directories, loads their weights strictly
with ``load_pretrained_parts``: every key of the target part must be found (missing keys are an error),
keys under the matched prefix that the part does not have are an error, and keys outside it (Whisper's
decoder, a CTC head) are counted as ignored in the report.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, PreTrainedConfig

from comsl.config import ModelConfig
from comsl.errors import CheckpointError, ConfigError
from comsl.models.composite import ComSLConfig, ComSLModel
from comsl.models.length_adapter import LengthAdapter
from comsl.models.speech_encoders import SPEECH_ENCODERS, WhisperSpeechEncoder
from comsl.models.text_models import TEXT_MODELS

log = logging.getLogger(__name__)

# Tiny architectures for tests and CPU smoke runs (hidden 16-32, 2 layers): seconds per step.
TINY_SPEECH_ARCH: dict[str, dict] = {
    "whisper": dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                    decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                    max_source_positions=550, vocab_size=64, pad_token_id=0, bos_token_id=1,
                    eos_token_id=2, decoder_start_token_id=1),
    "wav2vec2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                     vocab_size=32, mask_time_prob=0.0),
    "hubert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                   num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                   vocab_size=32, mask_time_prob=0.0),
    "w2v_bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     feature_projection_input_dim=160, conv_depthwise_kernel_size=3, add_adapter=False,
                     vocab_size=32, mask_time_prob=0.0, position_embeddings_type="relative_key",
                     left_max_position_embeddings=8, right_max_position_embeddings=8),
}
TINY_TEXT_ARCH: dict = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                            max_position_embeddings=256)

VOCAB_PADDING_TOLERANCE = 1000
"""A pretrained text model's embedding table may hold more rows than its tokenizer has tokens (padding
rows); a tokenizer smaller than the table by more than this is taken to be the wrong tokenizer."""


@dataclass
class LoadReport:
    """What strict loading of one part did."""

    part: str
    source: str
    loaded: int = 0
    ignored: list[str] = field(default_factory=list)
    """Keys in the checkpoint outside the part (e.g. Whisper's decoder)."""

    def __str__(self) -> str:
        return f"{self.part}: {self.loaded} tensors from {self.source} ({len(self.ignored)} outside the part ignored)"


# ------------------------------------------------------------------ configs


def _apply_dropout(kind: str, cfg: PreTrainedConfig, p: float) -> None:
    names = {"whisper": ("dropout", "attention_dropout", "activation_dropout"),
             "mbart": ("dropout",), "m2m100": ("dropout",), "nllb": ("dropout",)}.get(
        kind, ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout"))
    for name in names:
        if hasattr(cfg, name):
            setattr(cfg, name, p)


_SIZE_FIELD = re.compile(r"(layers|heads|_dim|d_model|hidden_size|intermediate_size|positions|vocab_size)$")
_WIDTH_HEADS = (("d_model", "encoder_attention_heads"), ("d_model", "decoder_attention_heads"),
                ("hidden_size", "num_attention_heads"))


def _arch_problems(config_cls: type[PreTrainedConfig], arch: dict, part: str) -> list[str]:
    """Unknown keys (typos), values of the wrong type and non-positive sizes in ``model.<part>_arch``."""
    if not dataclasses.is_dataclass(config_cls):
        return []
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    aliases = getattr(config_cls, "attribute_map", None) or {}
    known = set(defaults) | set(aliases)
    problems = []
    for key, value in arch.items():
        path = f"model.{part}_arch.{key}"
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            problems.append(f"{path}: unknown {config_cls.__name__} field"
                            + (f" (did you mean {close[0]!r}?)" if close else ""))
            continue
        default = defaults.get(aliases.get(key, key))
        if isinstance(default, (bool, int, float, str)):
            want = bool if isinstance(default, bool) else float if isinstance(default, float) else type(default)
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            ok = ok or (want is float and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                problems.append(f"{path}: expected {want.__name__}, got {type(value).__name__} ({value!r})")
                continue
        if _SIZE_FIELD.search(key) and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append(f"{path}: must be >= 1, got {value}")
    return problems


def _width_problems(cfg: PreTrainedConfig, part: str) -> list[str]:
    out = []
    for width, heads in _WIDTH_HEADS:
        w, h = getattr(cfg, width, None), getattr(cfg, heads, None)
        if isinstance(w, int) and isinstance(h, int) and h > 0 and w % h:
            out.append(f"model.{part}_arch: {width}={w} is not divisible by {heads}={h}")
    return out


def _backbone_config(config_cls: type[PreTrainedConfig], pretrained: str | None, arch: dict, part: str,
                     family_field: str, family: str, defaults: dict | None = None) -> PreTrainedConfig:
    """A backbone config: read from the pretrained directory (then ``arch`` applied on top), or the
    family's default with ``defaults`` and ``arch``. Raises ConfigError naming the field at fault."""
    problems = _arch_problems(config_cls, arch, part)
    if problems:
        raise ConfigError("; ".join(problems))
    cfg = _read_backbone_config(config_cls, pretrained, arch, part, family_field, family, defaults)
    problems = _width_problems(cfg, part)
    if problems:
        raise ConfigError("; ".join(problems) + " (attention splits the width into equal heads)")
    return cfg


def _read_backbone_config(config_cls: type[PreTrainedConfig], pretrained: str | None, arch: dict, part: str,
                          family_field: str, family: str, defaults: dict | None) -> PreTrainedConfig:
    if pretrained:
        cfg = AutoConfig.from_pretrained(_existing_dir(pretrained, f"model.{part}_pretrained"))
        if not isinstance(cfg, config_cls):
            raise ConfigError(f"model.{part}_pretrained: {pretrained} holds a {cfg.model_type!r} model, "
                              f"but model.{family_field} is {family!r}")
        for key, value in arch.items():
            setattr(cfg, key, value)
        return cfg
    try:
        return config_cls(**{**(defaults or {}), **arch})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.{part}_arch: {err}") from err


def speech_config_from(model_cfg: ModelConfig) -> PreTrainedConfig:
    """The speech-encoder config: from the pretrained directory, or the family default + ``speech_arch``."""
    kind = model_cfg.speech_encoder
    cfg = _backbone_config(SPEECH_ENCODERS[kind][0], model_cfg.speech_pretrained, model_cfg.speech_arch,
                           "speech", "speech_encoder", kind)
    _apply_dropout(kind, cfg, model_cfg.speech_dropout)
    return cfg


def text_config_from(model_cfg: ModelConfig, tokenizer) -> PreTrainedConfig:
    """The text-model config: from the pretrained directory, or the family default + ``text_arch`` with
    the tokenizer's vocabulary size and special ids."""
    family = model_cfg.text_model
    defaults = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    decoder_start_token_id=tokenizer.eos_token_id, scale_embedding=True)
    cfg = _backbone_config(TEXT_MODELS[family][0], model_cfg.text_pretrained, model_cfg.text_arch, "text",
                           "text_model", family, defaults)
    cfg.dropout = model_cfg.text_dropout
    cfg.attention_dropout = model_cfg.text_attention_dropout
    return cfg


def _existing_dir(path: str, field_name: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"{field_name}: {path} is not a Hugging Face model directory (no config.json)")
    return p


# ------------------------------------------------------------------ weights


def _weight_files(path: Path) -> list[Path]:
    """The weight files of a Hugging Face model directory: one or more safetensors, else a torch .bin.
    Raises CheckpointError when there is none."""
    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    if index.is_file():
        return [path / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if (path / "pytorch_model.bin").is_file():
        return [path / "pytorch_model.bin"]
    raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _read(path: Path, keys: Collection[str] | None, shapes_only: bool) -> dict:
    """``{key: tensor}`` (or ``{key: shape}``) of the weight files of ``path``, only ``keys`` when given.
    safetensors are opened lazily (``safe_open``) and a .bin memory-mapped, so tensors outside ``keys``
    are never read into memory."""
    out: dict = {}
    keys = set(keys) if keys is not None else None
    for file in _weight_files(path):
        if file.suffix == ".bin":
            try:
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
                state = torch.load(file, map_location="cpu", weights_only=True)
            for k, v in state.items():
                if keys is None or k in keys:
                    out[k] = tuple(v.shape) if shapes_only else v.clone()
            continue
        with safe_open(str(file), framework="pt") as f:
            for k in f.keys():
                if keys is None or k in keys:
                    out[k] = tuple(f.get_slice(k).get_shape()) if shapes_only else f.get_tensor(k)
    return out


def read_state_dict(path: str | Path, keys: Collection[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face model directory (safetensors, sharded or not; or a torch .bin loaded
    with ``weights_only=True``): all of them, or only ``keys`` (the others are not read). Raises
    CheckpointError when the directory holds no weights."""
    return _read(Path(path), keys, shapes_only=False)


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a model directory, read from the headers (no tensor data)."""
    return _read(Path(path), None, shapes_only=True)


def load_part(module: nn.Module, path: str | Path, part: str, tied: set[str] = frozenset(),
              within: str = "") -> LoadReport:
    """Load into ``module`` the tensors of the model directory ``path`` that belong to it (matched by the
    most common key prefix; only keys starting with ``within`` are considered), strictly, reading only
    those tensors. ``tied`` names target keys that may be absent because they are tied to another.

    Raises CheckpointError listing missing keys, unexpected keys under the prefix and shape mismatches.
    """
    source = str(path)
    shapes = {k: v for k, v in tensor_shapes(path).items() if k.startswith(within)}
    target = module.state_dict()
    prefixes: Counter[str] = Counter()
    for skey in shapes:
        for tkey in target:
            if skey.endswith(tkey) and (len(skey) == len(tkey) or skey[-len(tkey) - 1] == "."):
                prefixes[skey[: len(skey) - len(tkey)]] += 1
    if not prefixes:
        raise CheckpointError(f"{source}: no tensor matches the {part} ({type(module).__name__}); "
                              "is this the right model directory?")
    prefix = max(prefixes, key=lambda p: (prefixes[p], -len(p)))
    mine = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    ignored = sorted(k for k in shapes if not k.startswith(prefix))
    missing = sorted(k for k in target if k not in mine and k not in tied)
    unexpected = sorted(k for k in mine if k not in target)
    bad_shape = sorted(f"{k}: checkpoint {v} vs model {tuple(target[k].shape)}"
                       for k, v in mine.items() if k in target and v != tuple(target[k].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad_shape)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: cannot load the {part} strictly (prefix {prefix!r}): " + "; ".join(problems))
    state = read_state_dict(path, {prefix + k for k in mine})
    module.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=False)
    return LoadReport(part, source, loaded=len(mine), ignored=ignored)


def load_pretrained_parts(model: ComSLModel, model_cfg: ModelConfig, tokenizer=None) -> list[LoadReport]:
    """Load the pretrained speech and text backbones named in ``model_cfg`` into ``model``, then grow the
    text vocabulary to the tokenizer's (new language codes such as ``ca_ES``/``cy_GB``)."""
    reports = []
    if model_cfg.speech_pretrained:
        reports.append(load_part(model.speech_encoder.encoder, model_cfg.speech_pretrained, "speech encoder"))
    if model_cfg.text_pretrained:
        tied = set(getattr(model.text_model, "all_tied_weights_keys", {}) or {})
        reports.append(load_part(model.text_model, model_cfg.text_pretrained, "text model", tied))
        model.text_model.tie_weights()
    if tokenizer is not None and len(tokenizer) > model.config.text_config.vocab_size:
        log.info("resizing text embeddings %d -> %d for added language codes",
                 model.config.text_config.vocab_size, len(tokenizer))
        model.text_model.resize_token_embeddings(len(tokenizer))
    for report in reports:
        log.info("%s", report)
    return reports


def build_model(model_cfg: ModelConfig, tokenizer, load_weights: bool = True, ctc_head: bool = False,
                match_head: bool = False) -> ComSLModel:
    """Build the composite described by ``model_cfg`` (random init), then load pretrained parts.

    ``ctc_head`` / ``match_head`` add the heads of the optional CTC and matching objectives.
    Raises ConfigError for a bad combination (naming both sizes) and CheckpointError for weights that
    do not fit.
    """
    speech_cfg = speech_config_from(model_cfg)
    text_cfg = text_config_from(model_cfg, tokenizer)
    if tokenizer is not None and len(tokenizer) < text_cfg.vocab_size and not model_cfg.text_pretrained:
        raise ConfigError(f"model.text_arch.vocab_size ({text_cfg.vocab_size}) differs from the tokenizer "
                          f"({len(tokenizer)})")
    if tokenizer is not None and model_cfg.text_pretrained and len(tokenizer) < text_cfg.vocab_size - VOCAB_PADDING_TOLERANCE:
        raise ConfigError(
            f"tokenizer has {len(tokenizer)} tokens but the text model {model_cfg.text_pretrained} has "
            f"{text_cfg.vocab_size}: use the tokenizer that belongs to the text model"
        )
    config = ComSLConfig(
        speech_config=speech_cfg,
        text_config=text_cfg,
        speech_encoder_type=model_cfg.speech_encoder,
        text_model_type=model_cfg.text_model,
        adapter_dropout=model_cfg.adapter_dropout,
        max_speech_seconds=model_cfg.max_speech_seconds,
        ctc_vocab_size=max(len(tokenizer), text_cfg.vocab_size) if ctc_head else 0,
        match_head=match_head,
    )
    _check_lengths(config)
    model = ComSLModel(config)
    model.tokenizer = tokenizer
    if model_cfg.adapter_init == "subsample":
        try:
            model.adapter.init_as_subsampling_()
        except ValueError as err:
            raise ConfigError(f"model.adapter_init: {err}") from err
    if load_weights:
        load_pretrained_parts(model, model_cfg, tokenizer)
    elif tokenizer is not None and len(tokenizer) > model.config.text_config.vocab_size:
        model.text_model.resize_token_embeddings(len(tokenizer))
    if model_cfg.activation_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _check_lengths(config: ComSLConfig) -> None:
    """The text encoder must hold the longest adapter output (+ language prefix + a transcript for CML)."""
    if config.speech_encoder_type == "whisper":
        frames = int(config.max_speech_seconds * 100)
        if frames > 2 * config.speech_config.max_source_positions:
            raise ConfigError(
                f"model.max_speech_seconds={config.max_speech_seconds} needs {frames} mel frames but the Whisper "
                f"encoder has {config.speech_config.max_source_positions} positions "
                f"({2 * config.speech_config.max_source_positions} frames)"
            )
        positions = LengthAdapter.output_lengths(WhisperSpeechEncoder.output_lengths(frames)) + 1
    else:
        positions = int(config.max_speech_seconds * 50) // 4 + 1
    text_positions = config.text_config.max_position_embeddings
    if positions > text_positions:
        raise ConfigError(
            f"adapter output for {config.max_speech_seconds} s is {positions} positions but the text model "
            f"has max_position_embeddings={text_positions}"
        )
