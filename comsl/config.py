"""Experiment configs: dataclasses with paper defaults, strict YAML loading, dotted overrides.

Every field carries a docstring underneath it. Loading rejects unknown keys and wrong types and
reports *all* problems at once, each with its key path (``optim.lr: expected float, got str``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from comsl.errors import ConfigError
from comsl.languages import normalize_lang
from comsl.parts import PARTS


@dataclass(kw_only=True)
class ModelConfig:
    """Which backbones make up the composite and how they are initialised."""

    speech_encoder: Literal["whisper", "wav2vec2", "hubert", "w2v_bert"] = "whisper"
    """Speech block family (Whisper's encoder is the paper's choice)."""

    speech_pretrained: str | None = None
    """Local Hugging Face directory of the pretrained speech model; None = random init from ``speech_arch``."""

    speech_arch: dict[str, Any] = field(default_factory=dict)
    """Config overrides for a randomly initialised speech encoder (e.g. a tiny one for tests)."""

    text_model: Literal["mbart", "m2m100", "nllb"] = "mbart"
    """Language block family: mBART-50 (paper), or M2M100 / NLLB."""

    text_pretrained: str | None = None
    """Local Hugging Face directory of the pretrained text model; None = random init from ``text_arch``."""

    text_arch: dict[str, Any] = field(default_factory=dict)
    """Config overrides for a randomly initialised text model (vocab size comes from the tokenizer)."""

    tokenizer: str | None = None
    """Tokenizer directory; None = the one saved in ``text_pretrained``."""

    max_speech_seconds: float = 11.0
    """Longest utterance the speech encoder accepts (positional table sliced to the real length)."""

    adapter_dropout: float = 0.1
    """Dropout inside the length adapter."""

    adapter_init: Literal["random", "subsample"] = "random"
    """Length adapter start: ``random``, or ``subsample`` (a near pass-through that keeps every 4th speech
    state; for language blocks pretrained on this speech encoder's states, e.g. the mini recipe's blocks
    grafted from Whisper's decoder). ``subsample`` needs equal speech and text widths."""

    speech_dropout: float = 0.0
    """Dropout in the speech blocks (paper: none)."""

    text_dropout: float = 0.1
    """Dropout in the language blocks (paper: 0.1 in stage 2, 0.3 in stage 1)."""

    text_attention_dropout: float = 0.0
    """Attention dropout in the language blocks (paper: 0 in stage 2, 0.1 in stage 1)."""

    activation_checkpointing: bool = False
    """Recompute encoder/decoder layer activations in backward to save memory."""


@dataclass(kw_only=True)
class ObjectiveConfig:
    """Loss weights and hyper-parameters (paper §3.3-3.4, App. C). A weight of 0 skips that part."""

    w_asr: float = 0.35
    """Weight of the ASR loss (speech -> transcript)."""

    w_st: float = 0.35
    """Weight of the ST loss with decoder distribution matching."""

    w_mt: float = 0.2
    """Weight of the MT loss with teacher regularisation."""

    w_cml: float = 0.1
    """Weight of the cross-modality learning loss (MTP, STM, ERM)."""

    lambda_st: float = 0.8
    """DDM mix: share of the (stop-gradient) MT distribution in the ST target."""

    lambda_mt: float = 0.2
    """MT regularisation mix: share of the frozen teacher's distribution in the MT target."""

    w_erm: float = 0.1
    """Weight of encoder representation matching inside L_CML."""

    erm_variant: Literal["mse", "reference"] = "mse"
    """ERM distance: ``mse`` (paper), or ``reference`` (the reference code: per sentence, the sum of unsquared
    L2 distances between L2-normalised states; it pairs it with w_erm=0.2)."""

    erm_layer: int = 4
    """Text-encoder layer whose hidden states ERM matches (1-based; clipped to the encoder depth)."""

    mask_prob: float = 0.15
    """Probability of masking a transcript token for MTP (never pad, eos or language tokens)."""

    w_ctc: float = 0.0
    """Weight of CTC on the speech-encoder output against the transcript (mSLAM); 0 = off."""

    w_match: float = 0.0
    """Weight of speech-text matching (SLAM); 0 = off."""

    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy targets."""


@dataclass(kw_only=True)
class BucketConfig:
    """One length bucket: utterances up to these lengths (and beyond every earlier bucket), batched
    ``batch_size`` at a time."""

    max_frames: int = 0
    """Longest speech in the bucket, in 10 ms frames (0 for text-only training)."""

    max_tokens: int = 1
    """Longest text in the bucket, in tokens (the longer of transcript and translation)."""

    batch_size: int = 1
    """Utterances per batch (per GPU); ``comsl tune-batches`` fills it to a memory budget."""


@dataclass(kw_only=True)
class DataConfig:
    """Where the prepared manifests are and how batches are formed."""

    train_manifest: str = ""
    """Training manifest TSV written by ``comsl prepare`` (``<dir>/train.tsv``)."""

    dev_manifest: str | None = None
    """Dev manifest for periodic BLEU; None = no dev evaluation."""

    langs: list[str] = field(default_factory=list)
    """Source languages to use (CoVoST codes); empty = every language in the manifest."""

    max_frames_per_batch: int = 48000
    """Cap on padded speech frames (10 ms) per batch: B x longest utterance."""

    max_tokens_per_batch: int = 4096
    """Cap on padded target tokens per batch."""

    mt_manifest: str | None = None
    """Text-only pairs added to the MT task in stage 2 (e.g. the mini recipe's ``text_train.tsv``): each step
    L_MT (and its teacher term) also sees a batch of them; None = the speech batch's transcripts only, as the
    paper. Stage 1 (``train.stage=mt``) trains on ``train_manifest`` itself and refuses it."""

    mt_tokens_per_batch: int = 1024
    """Cap on padded tokens of that extra text batch per step (per rank), batched by token length."""

    num_buckets: int = 10
    """Length buckets along speech frames (text-only training: along tokens), of similar total length;
    each step every rank draws a batch from the same bucket. Fewer when the data fills fewer."""

    num_token_buckets: int = 4
    """Target-token ranges inside each speech bucket (2D buckets: padding shrinks on both sides);
    1 = buckets by speech length only."""

    buckets: list[BucketConfig] = field(default_factory=list)
    """Buckets with their own batch sizes, as ``comsl tune-batches`` writes them; they replace
    ``max_frames_per_batch``/``max_tokens_per_batch``. Empty: buckets estimated from the data
    (``num_buckets`` x ``num_token_buckets``), batches filled to the two caps."""

    audio_cache_mb: float = 0.0
    """Budget (MiB) of an LRU of decoded 16 kHz audio, per process (every DataLoader worker and rank
    holds its own); 0 = decode every time. Memory stays bounded whatever the corpus size."""

    max_fail_fraction: float = 0.01
    """Stop when more than this fraction of utterances fails to decode at run time."""

    dev_max_utterances: int = 200
    """Cap on dev utterances per language decoded at each evaluation."""

    train_sample_utterances: int = 0
    """Also score this many training utterances per language at each evaluation (0 = off): teacher-forced
    loss can fall while the model ignores the audio; BLEU on seen data shows whether it uses it."""

    eval_max_new_tokens: int = 64
    """Length cap of the periodic evaluation's decoding."""

    num_workers: int = 0
    """Worker processes loading training batches (0 = in the training process)."""


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with polynomial decay, as in the paper."""

    lr: float = 2e-5
    """Peak learning rate."""

    lr_per_part: dict[str, float] = field(default_factory=dict)
    """Peak learning rate per part (speech_encoder, adapter, text_encoder, text_decoder); others use lr."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """Adam betas."""

    eps: float = 1e-8
    """Adam epsilon."""

    weight_decay: float = 0.1
    """Decoupled weight decay, not applied to biases and norms."""

    warmup_steps: int = 5000
    """Linear warm-up steps."""

    power: float = 2.0
    """Power of the polynomial decay after warm-up."""

    end_lr: float = 0.0
    """Learning rate reached at the last step."""

    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""


@dataclass(kw_only=True)
class TrainConfig:
    """The training run: stage, engine, length, checkpoints and logging."""

    stage: Literal["mt", "comsl"] = "comsl"
    """``mt``: stage 1, fine-tune the text model on transcript->translation; ``comsl``: stage 2 multi-task."""

    out_dir: str = "runs/comsl"
    """Run directory: checkpoints, metrics.jsonl, TensorBoard events, resolved config."""

    init_from: str | None = None
    """Exported model directory to initialise from (stage 2: the stage-1 model for the language blocks)."""

    teacher: str | None = None
    """Exported stage-1 model used as the frozen MT teacher (needed when w_mt > 0 and lambda_mt > 0)."""

    max_steps: int = 100000
    """Optimizer steps to train."""

    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""

    engine: Literal["torch", "deepspeed"] = "torch"
    """``torch``: plain PyTorch (single process or DDP under torchrun); ``deepspeed``: ZeRO."""

    deepspeed_config: str | None = None
    """DeepSpeed JSON (``configs/deepspeed/zero2.json``); batch, optimizer and precision are filled in from here."""

    zero_stage: int | None = None
    """Override the ZeRO stage of ``deepspeed_config`` (0-3)."""

    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """bf16: bf16 weights with float32 masters and AdamW state; fp16: autocast with a loss scaler; ``auto`` =
    bf16 where the device has bf16 units, else fp16 on GPU / fp32 on CPU; bf16 on a CPU without them trains fp32."""

    seed: int = 1
    """Seed for initialisation, masking, dropout and batch order."""

    freeze_speech_fraction: float = 1 / 3
    """Speech blocks are frozen for this fraction of the training steps (paper: first third)."""

    speech_trainable: bool = True
    """Train the speech blocks (after the freezing period)."""

    adapter_trainable: bool = True
    """Train the length adapter."""

    text_encoder_trainable: bool = True
    """Train the text encoder."""

    text_decoder_trainable: bool = True
    """Train the text decoder."""

    log_every: int = 10
    """Steps between metrics.jsonl / TensorBoard records."""

    eval_every: int = 1000
    """Steps between dev BLEU evaluations (0 = only at the end)."""

    eval_beam: int = 1
    """Beam size of the periodic dev evaluation (final evaluation uses ``comsl evaluate``)."""

    save_every: int = 1000
    """Steps between checkpoints."""

    keep_last: int = 2
    """Most recent checkpoints kept."""

    keep_best: int = 1
    """Best checkpoints by dev BLEU kept."""

    max_nonfinite_steps: int = 10
    """Consecutive non-finite losses tolerated (each step skipped) before the run stops."""

    stop_after: int = 0
    """Stop this invocation after this many optimizer steps in total (0 = run to max_steps); a checkpoint
    is written and rerunning the same command resumes (for time-limited jobs)."""

    cache_frozen_speech: bool = False
    """Run each utterance through the speech blocks once and reuse the output (stage 2 with speech blocks
    frozen for the whole run and no speech dropout; a large saving with a real Whisper on CPUs)."""

    speech_cache_mb: float = 2048.0
    """Budget (MiB, per process) of that cache, least recently used outputs evicted first (Whisper-base,
    5 s: 0.5 MiB per utterance); an evicted utterance is simply encoded again."""

    checkpoint_export: bool = False
    """Also write a self-contained model directory (``model/``, as ``comsl evaluate`` loads) into every
    checkpoint; doubles checkpoint size. ``final/`` and ``best/`` are always exported."""


@dataclass(kw_only=True)
class ExperimentConfig:
    """Everything ``comsl train`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbones and initialisation."""

    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Loss weights."""

    data: DataConfig = field(default_factory=DataConfig)
    """Manifests and batching."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Run control."""


# --------------------------------------------------------------------------- strict loading


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check ``value`` against annotation ``tp``; return the converted value, append errors."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return None
        return _build(tp, value, path, errors)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _convert(value, arg, path, trial)
            if not trial:
                return out
        errors.append(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")
        return None
    if origin is Literal:
        if value not in typing.get_args(tp):
            errors.append(f"{path}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return None
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{path}.{k}", errors) for k, v in value.items()}
    if tp is float:
        # YAML reads 2e-5 as a string (no dot in the mantissa); accept numeric strings of that form.
        if isinstance(value, bool):
            errors.append(f"{path}: expected float, got bool")
            return None
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        errors.append(f"{path}: expected float, got {type(value).__name__} ({value!r})")
        return None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected int, got {type(value).__name__} ({value!r})")
            return None
        return value
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected bool, got {type(value).__name__} ({value!r})")
            return None
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected str, got {type(value).__name__} ({value!r})")
            return None
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


def _build(cls: type, data: dict, prefix: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(sorted(names))}"
            errors.append(f"{path}: unknown key{hint}")
            continue
        kwargs[key] = _convert(value, hints[key], path, errors)
    return cls(**kwargs)


def from_dict(cls: type, data: dict, source: str = "config") -> Any:
    """Build dataclass ``cls`` from a nested dict, strictly. Raises ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    errors: list[str] = []
    obj = _build(cls, data, "", errors)
    if errors:
        raise ConfigError(_listing(source, errors, "invalid entry", "invalid entries"))
    validate(obj, source)
    return obj


def parse_overrides(overrides: list[str]) -> dict:
    """Turn ``["optim.lr=1e-4", "data.langs=[fr,de]"]`` into a nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: {key.strip()}: value is not valid YAML ({problem}); "
                              "quote it or close its brackets") from err
    return out


def merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None, cls: type = ExperimentConfig) -> Any:
    """Load a YAML config with optional dotted overrides. Raises ConfigError naming the file and keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}; "
                          "a config is 'section:' blocks (model:, data:, train:, ...)")
    if overrides:
        data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data, source=str(path))


def _range_problems(cfg: "ExperimentConfig") -> list[str]:
    """Numbers outside their meaningful range; NaN fails every check (``not x >= 0`` is true for NaN)."""
    o, t, op, d, m = cfg.objectives, cfg.train, cfg.optim, cfg.data, cfg.model
    checks: list[tuple[str, Any, bool, str]] = []
    for name in ("w_asr", "w_st", "w_mt", "w_cml", "w_erm", "w_ctc", "w_match"):
        checks.append((f"objectives.{name}", getattr(o, name), math.isfinite(getattr(o, name))
                       and getattr(o, name) >= 0, ">= 0"))
    for name in ("lambda_st", "lambda_mt", "mask_prob", "label_smoothing"):
        checks.append((f"objectives.{name}", getattr(o, name), 0.0 <= getattr(o, name) <= 1.0, "in [0, 1]"))
    checks += [
        ("objectives.erm_layer", o.erm_layer, o.erm_layer >= 1, ">= 1"),
        ("train.freeze_speech_fraction", t.freeze_speech_fraction, 0.0 <= t.freeze_speech_fraction <= 1.0,
         "in [0, 1]"),
        ("train.max_steps", t.max_steps, t.max_steps >= 1, ">= 1"),
        ("train.grad_accum", t.grad_accum, t.grad_accum >= 1, ">= 1"),
        ("train.log_every", t.log_every, t.log_every >= 1, ">= 1"),
        ("train.save_every", t.save_every, t.save_every >= 1, ">= 1"),
        ("train.eval_every", t.eval_every, t.eval_every >= 0, ">= 0 (0 = only at the end)"),
        ("train.eval_beam", t.eval_beam, t.eval_beam >= 1, ">= 1"),
        ("train.keep_last", t.keep_last, t.keep_last >= 1, ">= 1"),
        ("train.keep_best", t.keep_best, t.keep_best >= 0, ">= 0"),
        ("train.max_nonfinite_steps", t.max_nonfinite_steps, t.max_nonfinite_steps >= 1, ">= 1"),
        ("train.stop_after", t.stop_after, t.stop_after >= 0, ">= 0 (0 = run to max_steps)"),
        ("optim.lr", op.lr, math.isfinite(op.lr) and op.lr > 0, "finite and > 0"),
        ("optim.eps", op.eps, math.isfinite(op.eps) and op.eps > 0, "finite and > 0 (0 divides by zero)"),
        ("optim.weight_decay", op.weight_decay, math.isfinite(op.weight_decay) and op.weight_decay >= 0, ">= 0"),
        ("optim.warmup_steps", op.warmup_steps, op.warmup_steps >= 0, ">= 0"),
        ("optim.power", op.power, math.isfinite(op.power) and op.power > 0, "finite and > 0"),
        ("optim.end_lr", op.end_lr, math.isfinite(op.end_lr) and 0 <= op.end_lr <= op.lr, "in [0, optim.lr]"),
        ("optim.max_grad_norm", op.max_grad_norm, math.isfinite(op.max_grad_norm) and op.max_grad_norm >= 0,
         "finite and >= 0 (0 = no clipping)"),
        ("data.max_fail_fraction", d.max_fail_fraction, 0.0 <= d.max_fail_fraction <= 1.0, "in [0, 1]"),
        ("data.dev_max_utterances", d.dev_max_utterances, d.dev_max_utterances >= 1, ">= 1"),
        ("data.train_sample_utterances", d.train_sample_utterances, d.train_sample_utterances >= 0, ">= 0"),
        ("data.eval_max_new_tokens", d.eval_max_new_tokens, d.eval_max_new_tokens >= 1, ">= 1"),
        ("data.num_workers", d.num_workers, d.num_workers >= 0, ">= 0"),
        ("data.audio_cache_mb", d.audio_cache_mb, math.isfinite(d.audio_cache_mb) and d.audio_cache_mb >= 0,
         ">= 0 (0 = no cache)"),
        ("train.speech_cache_mb", t.speech_cache_mb, math.isfinite(t.speech_cache_mb) and t.speech_cache_mb >= 0,
         ">= 0"),
        ("model.max_speech_seconds", m.max_speech_seconds, math.isfinite(m.max_speech_seconds)
         and m.max_speech_seconds > 0, "finite and > 0"),
    ]
    for name in ("adapter_dropout", "speech_dropout", "text_dropout", "text_attention_dropout"):
        checks.append((f"model.{name}", getattr(m, name), 0.0 <= getattr(m, name) < 1.0, "in [0, 1)"))
    for i, beta in enumerate(op.betas):
        checks.append((f"optim.betas[{i}]", beta, 0.0 <= beta < 1.0, "in [0, 1)"))
    for part, lr in op.lr_per_part.items():
        checks.append((f"optim.lr_per_part.{part}", lr, math.isfinite(lr) and lr >= 0, "finite and >= 0"))
    return [f"{key}: must be {what}, got {value}" for key, value, ok, what in checks if not ok]


def _paths_inside(inner: str, outer: str) -> bool:
    a, b = Path(inner).expanduser().resolve(), Path(outer).expanduser().resolve()
    return a == b or b in a.parents


def validate(cfg: Any, source: str = "config") -> None:
    """Value checks beyond types (ranges, required combinations). Raises ConfigError listing all."""
    if not isinstance(cfg, ExperimentConfig):
        return
    t, op = cfg.train, cfg.optim
    errors = _range_problems(cfg)
    if t.cache_frozen_speech and t.speech_trainable and t.freeze_speech_fraction < 1.0:
        errors.append("train.cache_frozen_speech: needs speech blocks frozen for the whole run "
                      "(train.speech_trainable=false or train.freeze_speech_fraction=1.0)")
    if t.cache_frozen_speech and cfg.model.speech_dropout > 0:
        errors.append(f"train.cache_frozen_speech: needs model.speech_dropout=0, got {cfg.model.speech_dropout}")
    if t.cache_frozen_speech and t.engine == "deepspeed" and t.zero_stage == 3:
        # a cache hit skips the encoder's forward on one rank while another gathers its ZeRO-3 shards
        errors.append("train.cache_frozen_speech: not with ZeRO-3 (ranks must run the same forwards); "
                      "set it false or use train.zero_stage 2")
    if t.zero_stage is not None and t.zero_stage not in (0, 1, 2, 3):
        errors.append(f"train.zero_stage: must be 0, 1, 2 or 3, got {t.zero_stage}")
    if t.engine == "deepspeed" and not t.deepspeed_config and t.zero_stage is None:
        errors.append("train.deepspeed_config: required with engine=deepspeed (or set train.zero_stage)")
    for key in ("init_from", "teacher"):
        src = getattr(t, key)
        if src and _paths_inside(src, t.out_dir):
            errors.append(f"train.{key}: {src} lies inside train.out_dir ({t.out_dir}), which this run writes "
                          "(checkpoints/, best/, final/); give this run its own train.out_dir")
    if len(op.betas) != 2:
        errors.append(f"optim.betas: expected two values, got {len(op.betas)}")
    for key in op.lr_per_part:
        if key not in PARTS:
            errors.append(f"optim.lr_per_part.{key}: unknown part; valid: {', '.join(sorted(PARTS))}")
    errors += _bucket_errors(cfg.data)
    for i, lang in enumerate(cfg.data.langs):
        try:
            normalize_lang(lang)
        except ValueError as err:
            errors.append(f"data.langs[{i}]: {err}")
    errors += _mt_text_errors(cfg)
    if not cfg.data.train_manifest:
        errors.append("data.train_manifest: required (a manifest written by `comsl prepare`)")
    if errors:
        raise ConfigError(_listing(source, errors, "invalid value", "invalid values"))


def _listing(source: str, errors: list[str], one: str, many: str) -> str:
    """One line for one problem; a count and one problem per line for several."""
    if len(errors) == 1:
        return f"{source}: {errors[0]}"
    return f"{source}: {len(errors)} {many}:\n  " + "\n  ".join(errors)


def _bucket_errors(data: DataConfig) -> list[str]:
    """Value checks of the batching keys."""
    errors = []
    for name in ("max_frames_per_batch", "max_tokens_per_batch", "num_buckets", "num_token_buckets"):
        if getattr(data, name) < 1:
            errors.append(f"data.{name}: must be >= 1, got {getattr(data, name)}")
    for k, b in enumerate(data.buckets):
        for name, low in (("max_frames", 0), ("max_tokens", 1), ("batch_size", 1)):
            if getattr(b, name) < low:
                errors.append(f"data.buckets[{k}].{name}: must be >= {low}, got {getattr(b, name)}")
    return errors


def _mt_text_errors(cfg: ExperimentConfig) -> list[str]:
    """Checks of the stage-2 extra MT text (``data.mt_manifest``); the file itself is checked by the task."""
    d = cfg.data
    if not d.mt_manifest:
        return []
    errors = []
    if cfg.train.stage == "mt":
        errors.append(f"data.mt_manifest: only for train.stage=comsl; stage 1 (train.stage=mt) trains on "
                      f"data.train_manifest itself: point that at {d.mt_manifest} and drop data.mt_manifest")
    if d.mt_tokens_per_batch < 1:
        errors.append(f"data.mt_tokens_per_batch: must be >= 1 with data.mt_manifest set, got {d.mt_tokens_per_batch}")
    return errors
