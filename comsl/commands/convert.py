"""`comsl convert ct2-whisper SRC_DIR OUT_DIR`: import a faster-whisper (CTranslate2) Whisper
checkpoint as an ordinary Hugging Face Whisper directory.
`comsl convert whisper-text WHISPER_DIR OUT_DIR --tokenizer DIR`: mBART-style language blocks whose decoder
is that Whisper's decoder (comsl.pretrained.whisper_text)."""

from __future__ import annotations

from pathlib import Path

from comsl.errors import CheckpointError, ConfigError

FORMATS = ("ct2-whisper", "whisper-text")


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a foreign checkpoint into a Hugging Face directory",
        description="ct2-whisper: convert a faster-whisper / CTranslate2 Whisper model directory (model.bin, "
        "tokenizer.json, config.json) into a transformers WhisperForConditionalGeneration directory. "
        "Files whose sha256 is a known model are reported as verified; others are converted and "
        "reported as unverified. whisper-text: build mBART-style language blocks (text encoder-decoder) "
        "from a Hugging Face Whisper directory: Whisper's decoder over the vocabulary of --tokenizer.",
    )
    p.add_argument("format", choices=FORMATS, help="source checkpoint format")
    p.add_argument("src_dir", type=Path, help="ct2-whisper: directory holding model.bin, tokenizer.json and "
                   "config.json; whisper-text: a Hugging Face Whisper directory")
    p.add_argument("out_dir", type=Path, help="Hugging Face directory to write")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the saved weights (float32 suits CPU training; default: float32)")
    p.add_argument("--tokenizer", type=Path, help="whisper-text: tokenizer directory whose vocabulary the "
                   "language blocks use (e.g. the mini corpus' EXP/data/tokenizer)")
    p.add_argument("--encoder-layers", type=int, default=2,
                   help="whisper-text: text encoder layers, taken from Whisper's top encoder layers (default: 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing converted model in OUT_DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    if (args.out_dir / "config.json").exists() and not args.overwrite:
        raise CheckpointError(f"{args.out_dir}: already holds a model (config.json); pass --overwrite to replace it")
    if args.format == "whisper-text":
        from comsl.pretrained.whisper_text import whisper_to_mbart

        if args.tokenizer is None:
            raise ConfigError("comsl convert whisper-text: --tokenizer DIR is required (the vocabulary to use)")
        summary = whisper_to_mbart(args.src_dir, args.tokenizer, args.out_dir, encoder_layers=args.encoder_layers)
    else:
        from comsl.pretrained.ct2_whisper import convert_ct2_whisper

        summary = convert_ct2_whisper(args.src_dir, args.out_dir, dtype=args.dtype)
    print(summary.describe())
    return 0
