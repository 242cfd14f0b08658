"""Stage 4 helper of run.sh: the ``whisper_zero_shot`` baseline's hypotheses as OUT/<lang>.txt.

Whisper translates each test utterance of the manifest to English with its own ``translate`` task;
one line per utterance, in manifest order per language, which is what
``comsl evaluate --baseline whisper_zero_shot=OUT`` scores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from comsl.data.audio import load_audio
from comsl.errors import ComSLError
from comsl.evaluation.decode import read_utterances
from comsl.evaluation.whisper_baseline import whisper_zero_shot
from comsl.training.precision import DTYPES, resolve_precision


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--whisper", required=True, help="Hugging Face Whisper directory (comsl fetch whisper-base)")
    p.add_argument("--data", required=True, help="test manifest (.tsv written by comsl prepare covost2)")
    p.add_argument("--langs", default=None, help="comma-separated CoVoST codes (default: all in the manifest)")
    p.add_argument("--beam", type=int, default=5, help="beam size")
    p.add_argument("--max-new-tokens", type=int, default=48, help="length cap (TTS speech can make Whisper loop)")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per generate call, languages mixed")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 where the CPU has bf16 matrix units (as comsl trains), else fp32")
    p.add_argument("--out", required=True, help="output directory for <lang>.txt")
    args = p.parse_args(argv)
    try:
        utts = read_utterances(args.data, args.langs.split(",") if args.langs else None)
        waveforms: dict[str, list] = {}
        for u in utts:
            waveforms.setdefault(u.src_lang, []).append(load_audio(u.audio))
        precision = resolve_precision(args.precision, torch.device("cpu"))
        start = time.time()
        hyps = whisper_zero_shot(args.whisper, waveforms, beam=args.beam, batch_size=args.batch_size,
                                 max_new_tokens=args.max_new_tokens, dtype=DTYPES.get(precision, torch.float32))
    except ComSLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for lang, lines in hyps.items():
        (out / f"{lang}.txt").write_text("".join(line.replace("\n", " ") + "\n" for line in lines))
    print(f"whisper_zero_shot: {len(utts)} utterances in {time.time() - start:.0f} s ({precision}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
