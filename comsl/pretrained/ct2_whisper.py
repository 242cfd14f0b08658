"""Import a CTranslate2 (faster-whisper) Whisper checkpoint as a Hugging Face Whisper directory.

A faster-whisper model directory holds ``model.bin`` (CTranslate2 ``WhisperSpec``), ``config.json``
(``lang_ids``, ``suppress_ids``, ``suppress_ids_begin``, ``alignment_heads``) and ``tokenizer.json``.
:func:`convert_ct2_whisper` maps every tensor onto ``WhisperForConditionalGeneration``, builds the
model config from tensor shapes, the tokenizer / feature extractor / generation config from the
two JSON files, loads strictly and writes an ordinary ``save_pretrained`` directory.

Tensor mapping (CTranslate2 -> transformers), per layer ``i``:

- ``{enc,dec}/layer_i/self_attention/linear_0`` (3D, D) fused q/k/v -> ``self_attn.{q,k,v}_proj``;
  the k bias must be zero (transformers' ``k_proj`` has no bias; a key bias only shifts every
  attention logit of a query by the same amount, so Whisper trains without one).
- ``self_attention/linear_1`` -> ``self_attn.out_proj``; ``self_attention/layer_norm`` -> ``self_attn_layer_norm``.
- decoder ``attention/linear_0`` -> ``encoder_attn.q_proj``; ``attention/linear_1`` (2D, D) fused k/v
  -> ``encoder_attn.{k,v}_proj``; ``attention/linear_2`` -> ``encoder_attn.out_proj``.
- ``ffn/linear_0``/``linear_1``/``layer_norm`` -> ``fc1``/``fc2``/``final_layer_norm``.
- ``gamma``/``beta`` -> ``weight``/``bias``; convs and positional tables copy directly;
  ``decoder/projection/weight`` (an alias of the embeddings) -> tied ``proj_out``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from comsl.data.audio import SAMPLING_RATE
from comsl.errors import CheckpointError
from comsl.pretrained.ct2_format import CT2Model, read_ct2_model

logger = logging.getLogger(__name__)

#: sha256 of the faster-whisper conversion of OpenAI Whisper base (multilingual), 145,217,532 bytes.
WHISPER_BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
#: Model files whose sha256 we have verified end to end, and what they are.
KNOWN_MODELS = {WHISPER_BASE_MODEL_SHA256: "OpenAI Whisper base (multilingual), faster-whisper CTranslate2 conversion"}
#: Written last into a converted directory; its presence marks a complete conversion.
CONVERSION_MARKER = "comsl_conversion.json"

HOP_LENGTH = 160
N_FFT = 400
TIME_PRECISION = 0.02  # seconds per Whisper timestamp token

# CTranslate2 ``Activation`` enum -> transformers activation name.
_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}
# Rank-0 attributes that must hold these values for transformers' Whisper to compute the same thing.
_REQUIRED_ATTRIBUTES = {"alibi": 0, "pre_norm": 1, "scale_embeddings": 0, "start_from_zero_embedding": 0}
# Rank-0 attributes read elsewhere (num_heads, activation) or superseded by config.json (alignment).
_READ_ATTRIBUTES = {"num_heads", "activation", "alignment_heads", "alignment_layer"}


@dataclass
class WhisperDims:
    """Architecture sizes read from the tensor shapes of a CTranslate2 Whisper model."""

    vocab_size: int
    """Rows of ``decoder/embeddings/weight``."""
    d_model: int
    """Hidden width (columns of the embeddings)."""
    num_mel_bins: int
    """Input channels of ``encoder/conv1``."""
    encoder_layers: int
    """Number of ``encoder/layer_*`` blocks."""
    decoder_layers: int
    """Number of ``decoder/layer_*`` blocks."""
    encoder_attention_heads: int
    """``encoder/num_heads``, else config.json ``num_heads``, else ``d_model // 64`` (Whisper's head width)."""
    decoder_attention_heads: int
    """As above for the decoder."""
    encoder_ffn_dim: int
    """Rows of ``encoder/layer_0/ffn/linear_0/weight``."""
    decoder_ffn_dim: int
    """Rows of ``decoder/layer_0/ffn/linear_0/weight``."""
    max_source_positions: int
    """Rows of the encoder positional table (1500 = 30 s after the stride-2 conv)."""
    max_target_positions: int
    """Rows of the decoder positional table."""
    activation_function: str
    """transformers name of the FFN activation."""
    tie_word_embeddings: bool
    """Whether the output projection is the token embedding (an alias or an identical tensor)."""


@dataclass
class ConversionSummary:
    """What :func:`convert_ct2_whisper` did; also written to ``comsl_conversion.json``."""

    source: str
    """The ``model.bin`` that was converted."""
    sha256: str
    """sha256 of that file."""
    verified: bool
    """Whether the sha256 is one of :data:`KNOWN_MODELS`."""
    known_as: str | None
    """Description of the verified model, ``None`` when unverified."""
    spec: str
    """CTranslate2 spec name and revision, e.g. ``WhisperSpec r3``."""
    source_dtypes: list[str]
    """Stored dtypes of the weight tensors in the source file."""
    dims: dict
    """:class:`WhisperDims` as a dict."""
    num_parameters: int
    """Parameters of the converted model (tied weights counted once)."""
    dtype: str
    """dtype the weights were saved in."""
    out_dir: str
    """The Hugging Face directory written."""

    def describe(self) -> str:
        """A few human-readable lines for the CLI."""
        status = f"verified: {self.known_as}" if self.verified else "UNVERIFIED (sha256 not a known model)"
        d = self.dims
        return "\n".join(
            [
                f"converted {self.source} -> {self.out_dir}",
                f"  sha256 {self.sha256} ({status})",
                f"  {self.spec}, source dtypes {','.join(self.source_dtypes)}, saved as {self.dtype}",
                f"  d_model {d['d_model']}, layers {d['encoder_layers']}+{d['decoder_layers']}, heads "
                f"{d['encoder_attention_heads']}, ffn {d['encoder_ffn_dim']}, vocab {d['vocab_size']}, "
                f"mels {d['num_mel_bins']}, {self.num_parameters / 1e6:.1f}M parameters",
            ]
        )


def sha256_file(path: Path, desc: str | None = None) -> str:
    """Hex sha256 of a file, streamed with a progress bar for large files."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=desc or f"sha256 {path.name}", disable=size < 2**24, leave=False
    ) as bar:
        for chunk in iter(lambda: f.read(2**22), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


class _Reader:
    """Hands out tensors of a CT2 model and remembers which variables were used."""

    def __init__(self, model: CT2Model):
        self.model = model
        self.used: set[str] = set()

    def get(self, name: str) -> torch.Tensor:
        real = self.model.resolve(name)
        if real not in self.model.variables:
            raise CheckpointError(
                f"{self.model.path}: missing variable '{name}' - not a CTranslate2 Whisper model of the "
                f"expected layout (spec {self.model.spec} r{self.model.revision})"
            )
        self.used.add(real)
        if f"{real}_scale" in self.model.variables:
            self.used.add(f"{real}_scale")
        return self.model.tensor(real)

    def optional(self, name: str) -> torch.Tensor | None:
        return self.get(name) if self.model.has(name) else None


def _count_layers(model: CT2Model, side: str) -> int:
    indices = {int(m.group(1)) for n in model.variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    if not indices:
        raise CheckpointError(f"{model.path}: no '{side}/layer_*' variables: not a Whisper model")
    if indices != set(range(len(indices))):
        raise CheckpointError(f"{model.path}: {side} layer indices are not contiguous: {sorted(indices)}")
    return len(indices)


def infer_dims(model: CT2Model, ct2_config: dict) -> WhisperDims:
    """Architecture sizes from tensor shapes (heads from the file's ``num_heads`` attributes).

    Raises:
        CheckpointError: not a ``WhisperSpec`` file, missing tensors, or attributes that transformers'
            Whisper cannot express (pre-norm off, ALiBi, scaled embeddings, unknown activation).
    """
    path = model.path
    if model.spec != "WhisperSpec":
        raise CheckpointError(f"{path}: spec is '{model.spec}', expected 'WhisperSpec' (a faster-whisper model)")
    for side in ("encoder", "decoder"):
        for attr, expected in _REQUIRED_ATTRIBUTES.items():
            value = model.scalar(f"{side}/{attr}", expected)
            if int(value) != expected:
                raise CheckpointError(
                    f"{path}: '{side}/{attr}' is {value}, transformers' Whisper needs {expected}; cannot convert"
                )
    activation_id = int(model.scalar("decoder/activation", model.scalar("encoder/activation", 3)))
    if activation_id not in _ACTIVATIONS:
        raise CheckpointError(f"{path}: unsupported activation id {activation_id} (known: {_ACTIVATIONS})")

    def shape(name: str) -> tuple[int, ...]:
        real = model.resolve(name)
        if real not in model.variables:
            raise CheckpointError(f"{path}: missing variable '{name}' (not a CTranslate2 Whisper model?)")
        return tuple(model.variables[real].shape)

    vocab_size, d_model = shape("decoder/embeddings/weight")

    def heads(side: str) -> int:
        value = model.scalar(f"{side}/num_heads", ct2_config.get("num_heads"))
        return int(value) if value is not None else d_model // 64

    proj = model.resolve("decoder/projection/weight")
    emb = model.resolve("decoder/embeddings/weight")
    tied = proj == emb or (
        model.has("decoder/projection/weight") and torch.equal(model.tensor(proj), model.tensor(emb))
    )
    dims = WhisperDims(
        vocab_size=vocab_size,
        d_model=d_model,
        num_mel_bins=shape("encoder/conv1/weight")[1],
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=heads("encoder"),
        decoder_attention_heads=heads("decoder"),
        encoder_ffn_dim=shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=shape("encoder/position_encodings/encodings")[0],
        max_target_positions=shape("decoder/position_encodings/encodings")[0],
        activation_function=_ACTIVATIONS[activation_id],
        tie_word_embeddings=bool(tied),
    )
    for side, h in (("encoder", dims.encoder_attention_heads), ("decoder", dims.decoder_attention_heads)):
        if h <= 0 or d_model % h:
            raise CheckpointError(f"{path}: {side} has {h} heads, which does not divide d_model {d_model}")
    return dims


def _split_rows(t: torch.Tensor, parts: int, name: str, path: Path) -> list[torch.Tensor]:
    if t.shape[0] % parts:
        raise CheckpointError(f"{path}: '{name}' has {t.shape[0]} rows, not divisible into {parts} fused parts")
    return list(t.chunk(parts, dim=0))


def _zero_key_bias(bias: torch.Tensor, name: str, path: Path) -> None:
    if torch.count_nonzero(bias):
        raise CheckpointError(
            f"{path}: the key part of '{name}' is non-zero (max |b| {bias.abs().max().item():.3g}); "
            "transformers' Whisper k_proj has no bias, so this is not a Whisper checkpoint we can convert"
        )


def whisper_state_dict(model: CT2Model, dims: WhisperDims) -> dict[str, torch.Tensor]:
    """transformers ``WhisperForConditionalGeneration`` state dict (float32) from a CT2 Whisper model.

    Raises:
        CheckpointError: missing tensors, a non-zero key bias, or CT2 variables the mapping does not use.
    """
    r = _Reader(model)
    path = model.path
    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = r.get(f"{src}/weight")
        sd[f"{dst}.bias"] = r.get(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = r.get(f"{src}/gamma")
        sd[f"{dst}.bias"] = r.get(f"{src}/beta")

    def self_attention(dst: str, src: str) -> None:
        for proj, w in zip("qkv", _split_rows(r.get(f"{src}/linear_0/weight"), 3, f"{src}/linear_0/weight", path)):
            sd[f"{dst}.{proj}_proj.weight"] = w
        q_b, k_b, v_b = _split_rows(r.get(f"{src}/linear_0/bias"), 3, f"{src}/linear_0/bias", path)
        _zero_key_bias(k_b, f"{src}/linear_0/bias", path)
        sd[f"{dst}.q_proj.bias"], sd[f"{dst}.v_proj.bias"] = q_b, v_b
        linear(f"{dst}.out_proj", f"{src}/linear_1")

    def cross_attention(dst: str, src: str) -> None:
        linear(f"{dst}.q_proj", f"{src}/linear_0")
        k_w, v_w = _split_rows(r.get(f"{src}/linear_1/weight"), 2, f"{src}/linear_1/weight", path)
        k_b, v_b = _split_rows(r.get(f"{src}/linear_1/bias"), 2, f"{src}/linear_1/bias", path)
        _zero_key_bias(k_b, f"{src}/linear_1/bias", path)
        sd[f"{dst}.k_proj.weight"], sd[f"{dst}.v_proj.weight"], sd[f"{dst}.v_proj.bias"] = k_w, v_w, v_b
        linear(f"{dst}.out_proj", f"{src}/linear_2")

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.fc1", f"{src}/linear_0")
        linear(f"{dst}.fc2", f"{src}/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/layer_norm")

    enc, dec = "model.encoder", "model.decoder"
    linear(f"{enc}.conv1", "encoder/conv1")
    linear(f"{enc}.conv2", "encoder/conv2")
    sd[f"{enc}.embed_positions.weight"] = r.get("encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        self_attention(f"{dst}.self_attn", f"{src}/self_attention")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        ffn(dst, f"{src}/ffn")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = r.get("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = r.get("decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        self_attention(f"{dst}.self_attn", f"{src}/self_attention")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        cross_attention(f"{dst}.encoder_attn", f"{src}/attention")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        ffn(dst, f"{src}/ffn")
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    sd["proj_out.weight"] = r.get("decoder/projection/weight")
    proj_bias = r.optional("decoder/projection/bias")
    if proj_bias is not None and torch.count_nonzero(proj_bias):
        raise CheckpointError(f"{path}: 'decoder/projection/bias' is non-zero; Whisper's proj_out has no bias")

    attributes = {n for n, v in model.variables.items() if v.ndim == 0 and n.split("/")[-1] in
                  set(_REQUIRED_ATTRIBUTES) | _READ_ATTRIBUTES}
    unused = sorted(set(model.variables) - r.used - attributes)
    if unused:
        shown = ", ".join(unused[:10]) + (f" ... ({len(unused)} in all)" if len(unused) > 10 else "")
        raise CheckpointError(f"{path}: variables not mapped to transformers' Whisper: {shown}")
    return sd


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise CheckpointError(f"{path}: not found (a faster-whisper model directory ships it next to model.bin)")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err


def build_tokenizer(tokenizer_json: Path, vocab_size: int):
    """``WhisperTokenizer`` (tokenizers-backed, a.k.a. ``WhisperTokenizerFast``) from faster-whisper's
    ``tokenizer.json``, with the timestamp tokens ``<|0.00|>`` .. appended after ``<|notimestamps|>``
    so that ``len(tokenizer) == vocab_size`` as in OpenAI's Whisper.

    Raises:
        CheckpointError: the file cannot be parsed, lacks Whisper's special tokens, or has more tokens
            than the model's vocabulary.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    try:
        backend = Tokenizer.from_file(str(tokenizer_json))
    except Exception as err:  # tokenizers raises a bare Exception on malformed files
        raise CheckpointError(f"{tokenizer_json}: cannot be read by the tokenizers library: {err}") from err
    for token in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        if backend.token_to_id(token) is None:
            raise CheckpointError(f"{tokenizer_json}: missing Whisper special token {token}")
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise CheckpointError(f"{tokenizer_json}: {size} tokens but the model's vocabulary has only {vocab_size}")
    if size < vocab_size:
        if backend.token_to_id("<|notimestamps|>") != size - 1:
            raise CheckpointError(
                f"{tokenizer_json}: {vocab_size - size} token ids of the model are missing and <|notimestamps|> "
                "is not the last token, so they cannot be the timestamp tokens"
            )
        backend.add_tokens(
            [AddedToken(f"<|{i * TIME_PRECISION:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
             for i in range(vocab_size - size)]
        )
    specials = [t.content for _, t in sorted(backend.get_added_tokens_decoder().items()) if t.special]
    return WhisperTokenizer(tokenizer_object=backend, extra_special_tokens=specials)


def _token_id(tokenizer, token: str, source: Path, required: bool = True) -> int | None:
    idx = tokenizer.convert_tokens_to_ids(token)
    if idx is None or idx == tokenizer.unk_token_id and token != tokenizer.unk_token:
        if required:
            raise CheckpointError(f"{source}: tokenizer has no {token} token")
        return None
    return idx


def build_generation_config(tokenizer, dims: WhisperDims, ct2_config: dict, source: Path):
    """The ``GenerationConfig`` that ``WhisperForConditionalGeneration.generate`` reads for
    ``language=`` / ``task=`` / timestamp handling (``lang_to_id``, ``task_to_id``,
    ``no_timestamps_token_id``, suppress lists, alignment heads)."""
    from transformers import GenerationConfig

    eot = _token_id(tokenizer, "<|endoftext|>", source)
    sot = _token_id(tokenizer, "<|startoftranscript|>", source)
    translate = _token_id(tokenizer, "<|translate|>", source)
    transcribe = _token_id(tokenizer, "<|transcribe|>", source)
    if "lang_ids" in ct2_config:
        lang_tokens = tokenizer.convert_ids_to_tokens(list(ct2_config["lang_ids"]))
    else:  # older conversions: the language tokens sit between <|startoftranscript|> and <|translate|>
        lang_tokens = tokenizer.convert_ids_to_tokens(list(range(sot + 1, translate)))
    bad = [t for t in lang_tokens if not re.fullmatch(r"<\|[a-z]{2,3}(_[a-z]+)?\|>", t or "")]
    if bad:
        raise CheckpointError(f"{source}: lang_ids map to tokens that are not language codes: {bad[:5]}")
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=dims.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        lang_to_id={t: tokenizer.convert_tokens_to_ids(t) for t in lang_tokens},
        task_to_id={"transcribe": transcribe, "translate": translate},
        is_multilingual=len(lang_tokens) > 1,
        no_timestamps_token_id=_token_id(tokenizer, "<|notimestamps|>", source),
        prev_sot_token_id=_token_id(tokenizer, "<|startofprev|>", source, required=False),
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    return gen


def build_feature_extractor(dims: WhisperDims):
    """``WhisperFeatureExtractor`` whose window matches the encoder's positional table
    (``2 * max_source_positions`` mel frames of 10 ms; 30 s for every OpenAI Whisper).

    Raises:
        CheckpointError: the window is not a whole number of seconds.
    """
    from transformers import WhisperFeatureExtractor

    samples = 2 * dims.max_source_positions * HOP_LENGTH
    if samples % SAMPLING_RATE:
        raise CheckpointError(
            f"encoder positional table of {dims.max_source_positions} rows is not a whole number of seconds"
        )
    return WhisperFeatureExtractor(
        feature_size=dims.num_mel_bins,
        sampling_rate=SAMPLING_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=samples // SAMPLING_RATE,
        n_fft=N_FFT,
        return_attention_mask=False,
    )


def build_whisper_config(dims: WhisperDims, generation_config):
    """``WhisperConfig`` for ``dims`` with special-token ids taken from the generation config."""
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_attention_heads,
        decoder_attention_heads=dims.decoder_attention_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function=dims.activation_function,
        tie_word_embeddings=dims.tie_word_embeddings,
        scale_embedding=False,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        bos_token_id=generation_config.bos_token_id,
        eos_token_id=generation_config.eos_token_id,
        pad_token_id=generation_config.pad_token_id,
        suppress_tokens=generation_config.suppress_tokens,
        begin_suppress_tokens=generation_config.begin_suppress_tokens,
    )


def load_strict(config, state_dict: dict[str, torch.Tensor], source: Path):
    """A ``WhisperForConditionalGeneration`` holding exactly ``state_dict``.

    Raises:
        CheckpointError: missing or unexpected keys (listed), or a shape mismatch.
    """
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(config)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{source}: tensors do not fit transformers' Whisper: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source}: strict load failed; missing keys {sorted(result.missing_keys)}, "
            f"unexpected keys {sorted(result.unexpected_keys)}"
        )
    tied = model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    if config.tie_word_embeddings and not tied:
        raise CheckpointError(f"{source}: proj_out is not tied to the decoder embeddings after loading")
    return model.eval()


def convert_ct2_whisper(src_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> ConversionSummary:
    """Convert a faster-whisper model directory into a Hugging Face Whisper directory.

    ``src_dir`` must hold ``model.bin`` and ``tokenizer.json``; ``config.json`` is used when present.
    ``out_dir`` receives ``config.json``, ``generation_config.json``, ``model.safetensors``,
    tokenizer files, ``preprocessor_config.json``, any ``LICENSE*``/``NOTICE*`` of the source, and
    last ``comsl_conversion.json`` (the :class:`ConversionSummary`). Files whose sha256 is unknown
    are still converted; the summary says they are unverified.

    Raises:
        CheckpointError: anything about the source that does not convert exactly.
    """
    if dtype not in ("float32", "float16"):
        raise CheckpointError(f"dtype must be float32 or float16, got '{dtype}'")
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    model_file = src_dir / "model.bin"
    if not model_file.is_file():
        raise CheckpointError(
            f"{model_file}: not found; SRC_DIR must be a faster-whisper (CTranslate2) model directory"
        )
    digest = sha256_file(model_file)
    logger.info("reading %s", model_file)
    ct2 = read_ct2_model(model_file)
    ct2_config = _read_json(src_dir / "config.json", required=False)
    dims = infer_dims(ct2, ct2_config)
    state_dict = whisper_state_dict(ct2, dims)
    tokenizer = build_tokenizer(src_dir / "tokenizer.json", dims.vocab_size)
    generation_config = build_generation_config(tokenizer, dims, ct2_config, src_dir / "config.json")
    config = build_whisper_config(dims, generation_config)
    model = load_strict(config, state_dict, model_file)
    model.generation_config = generation_config
    feature_extractor = build_feature_extractor(dims)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONVERSION_MARKER).unlink(missing_ok=True)
    logger.info("writing %s", out_dir)
    model.to(getattr(torch, dtype)).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    feature_extractor.save_pretrained(out_dir)
    for notice in sorted(src_dir.glob("LICENSE*")) + sorted(src_dir.glob("NOTICE*")):
        shutil.copyfile(notice, out_dir / notice.name)
    weight_dtypes = sorted({ct2.dtypes[n] for n, v in ct2.variables.items() if v.ndim > 0})
    summary = ConversionSummary(
        source=str(model_file),
        sha256=digest,
        verified=digest in KNOWN_MODELS,
        known_as=KNOWN_MODELS.get(digest),
        spec=f"{ct2.spec} r{ct2.revision}",
        source_dtypes=weight_dtypes,
        dims=asdict(dims),
        num_parameters=sum(p.numel() for p in model.parameters()),
        dtype=dtype,
        out_dir=str(out_dir),
    )
    (out_dir / CONVERSION_MARKER).write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    return summary


def read_conversion_marker(out_dir: str | Path) -> dict | None:
    """The ``comsl_conversion.json`` of a converted directory, or ``None`` when absent or unreadable."""
    marker = Path(out_dir) / CONVERSION_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


__all__ = [
    "CONVERSION_MARKER",
    "ConversionSummary",
    "KNOWN_MODELS",
    "WHISPER_BASE_MODEL_SHA256",
    "WhisperDims",
    "build_feature_extractor",
    "build_generation_config",
    "build_tokenizer",
    "build_whisper_config",
    "convert_ct2_whisper",
    "infer_dims",
    "load_strict",
    "read_conversion_marker",
    "sha256_file",
    "whisper_state_dict",
]
