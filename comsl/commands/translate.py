"""`comsl translate`: print the translation (or transcript) of each audio file, one line per file."""

from __future__ import annotations

from comsl.errors import ComSLError
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


def run(args) -> int:
    from comsl.evaluation.decode import DecodeConfig
    from comsl.evaluation.evaluate import translate_files

    try:
        lang = normalize_lang(args.src_lang)
    except ValueError as err:
        raise ComSLError(f"--src-lang: {err}") from err
    config = DecodeConfig(task=args.task, beam=args.beam, max_new_tokens=args.max_new_tokens, device=args.device)
    for line in translate_files(args.checkpoint, args.audio, lang, config):
        print(line)
    return 0
