"""`comsl convert ct2-whisper SRC_DIR OUT_DIR`: import a faster-whisper (CTranslate2) Whisper
checkpoint as an ordinary Hugging Face Whisper directory."""

from __future__ import annotations

from pathlib import Path

from comsl.errors import CheckpointError

FORMATS = ("ct2-whisper",)


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a foreign checkpoint into a Hugging Face directory",
        description="ct2-whisper: convert a faster-whisper / CTranslate2 Whisper model directory (model.bin, "
        "tokenizer.json, config.json) into a transformers WhisperForConditionalGeneration directory. "
        "Files whose sha256 is a known model are reported as verified; others are converted and "
        "reported as unverified.",
    )
    p.add_argument("format", choices=FORMATS, help="source checkpoint format")
    p.add_argument("src_dir", type=Path, help="directory holding model.bin, tokenizer.json and config.json")
    p.add_argument("out_dir", type=Path, help="Hugging Face directory to write")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the saved weights (float32 suits CPU training; default: float32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing converted model in OUT_DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from comsl.pretrained.ct2_whisper import convert_ct2_whisper

    if args.out_dir.resolve() == args.src_dir.resolve():
        raise CheckpointError(f"{args.out_dir}: is the source directory; converting into it would replace the "
                              "model being read. Give another OUT_DIR")
    if (args.out_dir / "config.json").exists() and not args.overwrite:
        raise CheckpointError(f"{args.out_dir}: already holds a model (config.json); pass --overwrite to replace it")
    summary = convert_ct2_whisper(args.src_dir, args.out_dir, dtype=args.dtype)
    print(summary.describe())
    return 0
