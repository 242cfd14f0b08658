"""A tiny faster-whisper (CTranslate2 ``WhisperSpec``) model directory built from scratch.

Same variable names, scalar attributes, fused q/k/v with a zero key bias and the projection alias
as the real Whisper-base file; tiny shapes: d_model 16, 4 heads, 2+2 layers, ffn 32, 8 mel bins,
vocab 60 (27 letters + 12 special tokens + 21 timestamp tokens the importer appends).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from comsl.pretrained.ct2_format import write_ct2_model

D, HEADS, FFN, MELS, LAYERS, VOCAB, SRC_POS, TGT_POS = 16, 4, 32, 8, 2, 60, 1500, 32
LETTERS = "Ġabcdefghijklmnopqrstuvwxyz"  # byte-level BPE shows the space as Ġ
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|de|>", "<|zh|>", "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TOKEN_ID = {t: len(LETTERS) + i for i, t in enumerate(SPECIALS)}


def tiny_variables(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Random float16 weights and scalar attributes named as in a real ``WhisperSpec`` r3 file."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float16)

    v: dict[str, np.ndarray] = {}

    def linear(name, out_dim, in_dim):
        v[f"{name}/weight"], v[f"{name}/bias"] = w(out_dim, in_dim), w(out_dim)

    def norm(name):
        v[f"{name}/gamma"], v[f"{name}/beta"] = (1 + w(D)).astype(np.float16), w(D)

    def fused_with_zero_key_bias(name, parts):
        linear(name, parts * D, D)
        start = D if parts == 3 else 0  # q/k/v -> k is the middle block; k/v -> k comes first
        v[f"{name}/bias"][start : start + D] = 0

    for side in ("encoder", "decoder"):
        for i in range(LAYERS):
            p = f"{side}/layer_{i}"
            fused_with_zero_key_bias(f"{p}/self_attention/linear_0", 3)
            linear(f"{p}/self_attention/linear_1", D, D)
            norm(f"{p}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{p}/attention/linear_0", D, D)
                fused_with_zero_key_bias(f"{p}/attention/linear_1", 2)
                linear(f"{p}/attention/linear_2", D, D)
                norm(f"{p}/attention/layer_norm")
            linear(f"{p}/ffn/linear_0", FFN, D)
            linear(f"{p}/ffn/linear_1", D, FFN)
            norm(f"{p}/ffn/layer_norm")
        norm(f"{side}/layer_norm")
        v[f"{side}/num_heads"] = np.array(HEADS, dtype=np.int16)
    v["encoder/conv1/weight"], v["encoder/conv1/bias"] = w(D, MELS, 3), w(D)
    v["encoder/conv2/weight"], v["encoder/conv2/bias"] = w(D, D, 3), w(D)
    v["encoder/position_encodings/encodings"] = w(SRC_POS, D)
    v["decoder/position_encodings/encodings"] = w(TGT_POS, D)
    v["decoder/embeddings/weight"] = w(VOCAB, D)
    for name, value, dtype in [("activation", 3, np.int8), ("alibi", 0, np.int8), ("alignment_heads", 1, np.int16),
                               ("alignment_layer", -1, np.int16), ("pre_norm", 1, np.int8),
                               ("scale_embeddings", 0, np.int8), ("start_from_zero_embedding", 0, np.int8)]:
        v[f"decoder/{name}"] = np.array(value, dtype=dtype)
    return dict(sorted(v.items())), {"decoder/projection/weight": "decoder/embeddings/weight"}


def write_tokenizer_json(path: Path) -> None:
    """A byte-level BPE ``tokenizer.json`` over 27 letter tokens plus Whisper's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(LETTERS)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    tok.save(str(path))


def write_tiny_model_dir(out: Path, variables=None, aliases=None) -> Path:
    """A faster-whisper directory: ``model.bin``, ``config.json``, ``tokenizer.json``, ``LICENSE``."""
    if variables is None:
        variables, aliases = tiny_variables()
    out.mkdir(parents=True, exist_ok=True)
    write_ct2_model(out / "model.bin", "WhisperSpec", 3, variables, aliases)
    config = {
        "alignment_heads": [[1, 0], [1, 2]],
        "lang_ids": [TOKEN_ID[t] for t in ("<|en|>", "<|fr|>", "<|de|>", "<|zh|>")],
        "suppress_ids": [1, 2, TOKEN_ID["<|startoftranscript|>"]],
        "suppress_ids_begin": [0, TOKEN_ID["<|endoftext|>"]],
    }
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    write_tokenizer_json(out / "tokenizer.json")
    (out / "LICENSE").write_text("MIT License\n\nCopyright (c) 2022 Tiny Test\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory) -> Path:
    """A tiny faster-whisper model directory (shared by a module's tests; do not modify)."""
    return write_tiny_model_dir(tmp_path_factory.mktemp("ct2") / "tiny-ct2")


@pytest.fixture(scope="module")
def tiny_hf(tiny_src, tmp_path_factory) -> Path:
    """``tiny_src`` converted to a Hugging Face Whisper directory."""
    from comsl.pretrained.ct2_whisper import convert_ct2_whisper

    out = tmp_path_factory.mktemp("hf") / "tiny-hf"
    convert_ct2_whisper(tiny_src, out)
    return out
