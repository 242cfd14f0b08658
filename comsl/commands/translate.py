"""`comsl translate`: print the translation (or transcript) of each audio file, one line per file."""

from __future__ import annotations

import sys

from comsl.errors import ComSLError, DataError
from comsl.languages import normalize_lang


def register(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="translate (or transcribe) audio files with a ComSL checkpoint",
        description="Audio in any format soundfile reads, any sample rate. Prints one line per file, in order.",
    )
    p.add_argument("--checkpoint", required=True, help="exported model dir or training run dir")
    p.add_argument("--src-lang", required=True, help="spoken language (CoVoST code, e.g. fr, zh-CN)")
    p.add_argument("--task", choices=("st", "asr"), default="st", help="st: English translation; asr: transcript")
    p.add_argument("--beam", type=int, default=5, help="beam size (paper: 5)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="longest output in tokens")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("audio", nargs="+", help="audio files")
    p.set_defaults(func=run)


MIN_SECONDS = 0.1
"""Shorter clips are refused (``prepare covost2``'s default ``--min-seconds``: below it the encoder has no frame)."""


def run(args) -> int:
    from comsl.data.audio import SAMPLING_RATE
    from comsl.evaluation.decode import DecodeConfig, Decoder, file_utterances

    try:
        lang = normalize_lang(args.src_lang)
    except ValueError as err:
        raise ComSLError(f"--src-lang: {err}") from err
    config = DecodeConfig(task=args.task, beam=args.beam, max_new_tokens=args.max_new_tokens, device=args.device)
    decoder = Decoder.from_checkpoint(args.checkpoint, config)
    longest = decoder.max_samples / SAMPLING_RATE
    failed = 0
    # File by file: a bad file gets an empty line and an error, the others are still translated.
    for path in args.audio:
        try:
            line = _translate_one(decoder, file_utterances([path], lang)[0])
        except DataError as err:
            print("", flush=True)
            print(f"comsl translate: error: {err}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(line, flush=True)
        if decoder.truncated:
            print(f"comsl translate: warning: {path}: longer than the model's {longest:.1f} s; only the first "
                  f"{longest:.1f} s were translated (cut the file into shorter clips)", file=sys.stderr)
    return 1 if failed else 0


def _translate_one(decoder, utt) -> str:
    if utt.duration < MIN_SECONDS:
        raise DataError(f"{utt.audio}: {utt.duration:.3f} s of audio, too short to translate "
                        f"(at least {MIN_SECONDS} s)")
    decoder.failed.clear()
    decoder.truncated.clear()
    hyp = decoder.decode([utt], progress=False)[0]
    if decoder.failed:
        raise DataError(f"{utt.audio}: the audio cannot be decoded")
    return hyp
