"""Stage 1 of the mini recipe: language blocks from Whisper, an mBART-style text model whose decoder is
Whisper's pretrained decoder. Run by run.sh as ``python -m mini.whisper_text WHISPER_DIR OUT_DIR
--tokenizer DIR`` (recipe-only: with real mBART-50 weights you would not need it).

No mBART weights exist offline, but Whisper's decoder is a pretrained multilingual-to-English language
model whose layers have exactly mBART's layout (pre-LayerNorm self-attention, cross-attention, GELU
FFN, final LayerNorm, learned positions). ``whisper_to_mbart`` copies it into an
``MBartForConditionalGeneration`` over *another* tokenizer's vocabulary (the mini corpus' own), so the
rest of the package (tokenizer, language codes, composite, objectives) is unchanged:

- decoder layers, final LayerNorm and positions: copied exactly (mBART's learned positions sit at
  offset 2; Whisper's k_proj has no bias, so mBART's is zero);
- encoder: the top ``encoder_layers`` of Whisper's *encoder* (same layer layout) with their residual
  branches closed (zero ``out_proj``/``fc2``), so it starts as a pass-through: its two LayerNorms
  re-normalise the input and restore the per-position mean and spread of Whisper's final encoder
  states. Speech states of Whisper's encoder (through a ``subsample`` length adapter) then reach the
  decoder almost as Whisper's decoder was trained to read them; text learns its way in. Encoder
  positions are Whisper's encoder sinusoids scaled by ``ENCODER_POSITION_SCALE``;
- token embeddings (tied with the LM head): each piece of the target vocabulary is the mean of the
  Whisper embeddings of its Whisper tokenization (``▁`` as a space); ``<s>`` (the decoder start) is
  ``<|startoftranscript|>``, ``</s>`` is ``<|endoftext|>``, the target code ``en_XX`` (just before the
  text) is ``<|notimestamps|>``, other language codes are Whisper's ``<|xx|>``;
- the decoder's ``layernorm_embedding`` has no Whisper twin: a scalar gain equal to the typical spread
  of the (embedding + position) vectors makes it close to the identity on them.

The decoder is exactly Whisper's (pinned by tests); the embedding LayerNorm, the vocabulary transfer
and the 4x shorter speech sequence are approximations that training adjusts (how far they start from
Whisper itself is measured in BENCHMARKS.md, ## Mini recipe).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from comsl.data.tokenizer import MBART50_CODES
from comsl.errors import CheckpointError, ComSLError
from comsl.languages import EXTRA_MODEL_CODES, TARGET_CODE, base_code

log = logging.getLogger(__name__)

LAYER_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
               "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
CROSS_PARTS = ("encoder_attn.q_proj", "encoder_attn.k_proj", "encoder_attn.v_proj", "encoder_attn.out_proj",
               "encoder_attn_layer_norm")
ENCODER_POSITION_SCALE = 0.1
LANGUAGE_CODES = frozenset(MBART50_CODES) | frozenset(EXTRA_MODEL_CODES)
# mini-tokenizer specials -> Whisper tokens (None: mean of all embeddings)
SPECIAL_MAP = {"<s>": "<|startoftranscript|>", "</s>": "<|endoftext|>", "<pad>": "<|endoftext|>",
               "<unk>": None, "<mask>": None,
               # the target code sits right before the text, where Whisper's prompt has <|notimestamps|>
               TARGET_CODE: "<|notimestamps|>"}


@dataclass
class TextFromWhisperSummary:
    """What ``whisper_to_mbart`` wrote."""
    out_dir: Path
    encoder_layers: int
    decoder_layers: int
    vocab_size: int
    exact_pieces: int
    """Pieces that are a single Whisper token (the rest are means of several)."""
    parameters: int

    def describe(self) -> str:
        return (f"wrote {self.out_dir}: mBART-style text model from Whisper ({self.encoder_layers} encoder + "
                f"{self.decoder_layers} decoder layers, {self.parameters / 1e6:.1f}M parameters), vocabulary "
                f"{self.vocab_size} ({self.exact_pieces} pieces are one Whisper token, the rest averaged)")


def _whisper_tokenizer(tokenizer_json: Path):
    from tokenizers import Tokenizer

    if not tokenizer_json.is_file():
        raise CheckpointError(f"{tokenizer_json.parent}: no tokenizer.json; convert Whisper with "
                              "`python -m mini.fetch_whisper whisper-base DIR` or `comsl convert ct2-whisper`")
    return Tokenizer.from_file(os.fspath(tokenizer_json))


def transfer_embeddings(whisper_embed: torch.Tensor, whisper_tok, tokenizer) -> tuple[torch.Tensor, int]:
    """Embeddings (len(tokenizer), d) for ``tokenizer``'s vocabulary built from Whisper's (V_w, d): each
    piece is the mean of the embeddings of its Whisper tokenization. Returns them and how many pieces
    are exactly one Whisper token."""
    mean = whisper_embed.mean(0)
    out = mean.repeat(len(tokenizer), 1)
    vocab = tokenizer.get_vocab()
    exact = 0
    for piece, idx in vocab.items():
        if piece in SPECIAL_MAP:
            target = SPECIAL_MAP[piece]
            ids = [] if target is None else [whisper_tok.token_to_id(target)]
        elif piece in LANGUAGE_CODES:
            # an mBART-50 language code such as es_XX / zh_CN -> Whisper's <|es|> / <|zh|>
            wid = whisper_tok.token_to_id(f"<|{base_code(piece)}|>")
            ids = [] if wid is None else [wid]
        else:
            ids = whisper_tok.encode(piece.replace("\u2581", " "), add_special_tokens=False).ids
        ids = [i for i in ids if i is not None and i < whisper_embed.shape[0]]
        if ids:
            out[idx] = whisper_embed[ids].mean(0)
            exact += len(ids) == 1
    return out, exact


def _read_whisper(whisper_dir: Path, encoder_layers: int, decoder_layers: int | None):
    """(WhisperConfig, decoder layers kept, float32 state without the ``model.`` prefix)."""
    from transformers import WhisperConfig

    from comsl.models.build import read_state_dict

    cfg_path = whisper_dir / "config.json"
    if not cfg_path.is_file() or json.loads(cfg_path.read_text()).get("model_type") != "whisper":
        raise CheckpointError(f"{whisper_dir}: not a Hugging Face Whisper directory (config.json with "
                              "model_type 'whisper')")
    wcfg = WhisperConfig.from_pretrained(whisper_dir)
    decoder_layers = wcfg.decoder_layers if decoder_layers is None else decoder_layers
    if not 1 <= decoder_layers <= wcfg.decoder_layers or not 0 <= encoder_layers <= wcfg.encoder_layers:
        raise CheckpointError(f"{whisper_dir}: has {wcfg.encoder_layers} encoder and {wcfg.decoder_layers} "
                              f"decoder layers; asked for {encoder_layers} and {decoder_layers}")
    state = {k.removeprefix("model."): v.float() for k, v in read_state_dict(whisper_dir).items()}
    return wcfg, decoder_layers, state


def _mbart_config(wcfg, tokenizer, encoder_layers: int, decoder_layers: int):
    from transformers import MBartConfig

    return MBartConfig(
        vocab_size=len(tokenizer), d_model=wcfg.d_model, max_position_embeddings=wcfg.max_target_positions,
        encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        encoder_attention_heads=wcfg.encoder_attention_heads, decoder_attention_heads=wcfg.decoder_attention_heads,
        encoder_ffn_dim=wcfg.encoder_ffn_dim, decoder_ffn_dim=wcfg.decoder_ffn_dim,
        activation_function=wcfg.activation_function, scale_embedding=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        # the decoder starts from <s>, whose embedding is Whisper's <|startoftranscript|>
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )


def _copy_layers(state: dict, wcfg, encoder_layers: int, decoder_layers: int, source: Path) -> dict:
    """mBART layer tensors: Whisper's bottom decoder layers, and its top encoder layers with their
    residual branches closed (zero ``out_proj``/``fc2``: the layer passes its input through)."""
    d = wcfg.d_model
    new: dict[str, torch.Tensor] = {}

    def copy_layer(src: str, dst: str, parts: tuple[str, ...]) -> None:
        for part in parts:
            for kind in ("weight", "bias"):
                key = f"{src}.{part}.{kind}"
                if key in state:
                    new[f"{dst}.{part}.{kind}"] = state[key]
                elif kind == "bias":  # Whisper's k_proj has no bias
                    new[f"{dst}.{part}.{kind}"] = torch.zeros(d)
                else:
                    raise CheckpointError(f"{source}: tensor {key} is missing")

    for i in range(decoder_layers):
        copy_layer(f"decoder.layers.{i}", f"model.decoder.layers.{i}", LAYER_PARTS + CROSS_PARTS)
    first = wcfg.encoder_layers - encoder_layers
    for i in range(encoder_layers):
        copy_layer(f"encoder.layers.{first + i}", f"model.encoder.layers.{i}", LAYER_PARTS)
        for key in (f"model.encoder.layers.{i}.{part}.{kind}" for part in ("self_attn.out_proj", "fc2")
                    for kind in ("weight", "bias")):
            new[key] = torch.zeros_like(new[key])
    return new


def _norms_and_positions(state: dict, wcfg, embed: torch.Tensor) -> dict:
    """Final and embedding LayerNorms and both position tables (see module doc)."""
    d, max_pos = wcfg.d_model, wcfg.max_target_positions
    new = {"model.decoder.layer_norm.weight": state["decoder.layer_norm.weight"],
           "model.decoder.layer_norm.bias": state["decoder.layer_norm.bias"]}
    # The encoder's two LayerNorms re-normalise what comes in (Whisper's final encoder states, or token
    # embeddings) and give it back the per-position mean and spread of Whisper's final encoder LayerNorm
    # output: y = g * n + b has mean ~mean(b) and spread ~sqrt(mean(g^2) + var(b)).
    g, b = state["encoder.layer_norm.weight"], state["encoder.layer_norm.bias"]
    new["model.encoder.layernorm_embedding.weight"] = torch.ones(d)
    new["model.encoder.layernorm_embedding.bias"] = torch.zeros(d)
    new["model.encoder.layer_norm.weight"] = torch.full((d,), float((g.pow(2).mean() + b.var()).sqrt()))
    new["model.encoder.layer_norm.bias"] = torch.full((d,), float(b.mean()))
    # Positions: the decoder's are Whisper's (offset 2); the encoder's are Whisper's encoder sinusoids,
    # scaled down so speech states (which carry their own) are barely moved while text gets an order.
    dec_pos = state["decoder.embed_positions.weight"][:max_pos]
    enc_pos = ENCODER_POSITION_SCALE * state["encoder.embed_positions.weight"][:max_pos]
    for side, pos in (("decoder", dec_pos), ("encoder", enc_pos)):
        table = torch.zeros(max_pos + 2, d)
        table[2:] = pos
        new[f"model.{side}.embed_positions.weight"] = table
    # near-identity decoder embedding LayerNorm: gain = typical std of (token + position) vectors
    gain = (embed[:, None, :] + dec_pos[None, :32, :]).std(-1).median()
    new["model.decoder.layernorm_embedding.weight"] = torch.full((d,), float(gain))
    new["model.decoder.layernorm_embedding.bias"] = torch.zeros(d)
    return new


def whisper_to_mbart(whisper_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike,
                     out_dir: str | os.PathLike, encoder_layers: int = 2,
                     decoder_layers: int | None = None) -> TextFromWhisperSummary:
    """Write an mBART-style text model initialised from the Whisper directory ``whisper_dir`` (a
    Hugging Face ``WhisperForConditionalGeneration``) over the tokenizer in ``tokenizer_dir`` to
    ``out_dir`` (config, safetensors and the tokenizer). ``decoder_layers`` keeps Whisper's bottom layers
    (default: all); ``encoder_layers`` takes Whisper's top encoder layers. Raises CheckpointError for a
    directory that is not a Whisper model or asks for more layers than it has."""
    from transformers import MBartForConditionalGeneration

    from comsl.data.tokenizer import load_tokenizer

    whisper_dir, out_dir = Path(whisper_dir), Path(out_dir)
    wcfg, decoder_layers, state = _read_whisper(whisper_dir, encoder_layers, decoder_layers)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = MBartForConditionalGeneration(_mbart_config(wcfg, tokenizer, encoder_layers, decoder_layers))
    embed, exact = transfer_embeddings(state["decoder.embed_tokens.weight"], _whisper_tokenizer(
        whisper_dir / "tokenizer.json"), tokenizer)
    new = {"model.shared.weight": embed, **_copy_layers(state, wcfg, encoder_layers, decoder_layers, whisper_dir),
           **_norms_and_positions(state, wcfg, embed)}
    missing, unexpected = model.load_state_dict(new, strict=False)
    tied = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight",
            "final_logits_bias"}  # tied to the shared embedding, or a zero buffer
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:  # a transformers change in mBART's layout would surface here
        raise CheckpointError(f"whisper_to_mbart: mapping incomplete (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    licence = whisper_dir / "LICENSE"
    if licence.is_file():
        (out_dir / "LICENSE").write_text(licence.read_text())
    summary = TextFromWhisperSummary(out_dir, encoder_layers, decoder_layers, len(tokenizer), exact,
                                     sum(p.numel() for p in model.parameters()))
    log.info("%s", summary.describe())
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mini.whisper_text", description=__doc__.splitlines()[0])
    p.add_argument("whisper_dir", type=Path, help="a Hugging Face Whisper directory")
    p.add_argument("out_dir", type=Path, help="Hugging Face directory to write")
    p.add_argument("--tokenizer", type=Path, required=True,
                   help="tokenizer directory whose vocabulary the language blocks use (the mini corpus' DATA/tokenizer)")
    p.add_argument("--encoder-layers", type=int, default=2,
                   help="text encoder layers, taken from Whisper's top encoder layers (default: 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in OUT_DIR")
    args = p.parse_args(argv)
    try:
        if (args.out_dir / "config.json").exists() and not args.overwrite:
            raise CheckpointError(f"{args.out_dir}: already holds a model (config.json); pass --overwrite to replace it")
        summary = whisper_to_mbart(args.whisper_dir, args.tokenizer, args.out_dir, encoder_layers=args.encoder_layers)
    except ComSLError as err:
        print(f"mini.whisper_text: error: {err}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
