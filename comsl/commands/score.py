"""`comsl score`: score existing hypothesis/reference files exactly as the sacreBLEU command does."""

from __future__ import annotations

import json
import os
from argparse import Namespace

from sacrebleu.utils import print_single_results

from comsl.errors import ComSLError
from comsl.evaluation.scoring import corpus_wer, read_lines, score_files, wer_signature


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score a hypothesis file against a reference file (sacreBLEU BLEU/chrF, WER)",
        description="Same numbers, signature and output format as `sacrebleu REF -i HYP [-m ...] [-f json]`.",
    )
    p.add_argument("--hyp", required=True, help="hypotheses, one segment per line (UTF-8)")
    p.add_argument("--ref", required=True, help="raw references, one per line, same order")
    p.add_argument("--lang", default="en",
                   help="language of the text being scored (default en -> 13a; zh -> zh; ja -> ja-mecab)")
    p.add_argument("--metrics", "-m", nargs="+", choices=("bleu", "chrf", "wer"), default=["bleu"],
                   help="metrics to compute (default: bleu)")
    p.add_argument("--width", "-w", type=int, default=1, help="decimals printed (default 1, as sacreBLEU)")
    p.add_argument("--json", action="store_true", help="print sacreBLEU's JSON output format")
    p.set_defaults(func=run)


def _wer_entry(args, width: int) -> str:
    score = corpus_wer(read_lines(args.hyp), read_lines(args.ref), args.lang, what=f"{args.hyp} vs {args.ref}")
    if args.json:
        return json.dumps({"name": "WER", "score": float(f"{score:.{width}f}"), "signature": wer_signature(args.lang)},
                          indent=1, ensure_ascii=False)
    return f"WER|{wer_signature(args.lang)} = {score:.{width}f}"


def run(args) -> int:
    if args.width < 0:
        raise ComSLError(f"--width: decimals must be >= 0, got {args.width}")
    for flag, path in (("--hyp", args.hyp), ("--ref", args.ref)):
        if os.path.isdir(path):
            raise ComSLError(f"{flag} {path}: is a directory; give a text file with one segment per line")
    results = []
    # sacreBLEU prints metrics in sorted name order (BLEU before CHRF); WER comes last.
    for metric in sorted(dict.fromkeys(args.metrics), key=lambda m: (m == "wer", m.upper())):
        if metric == "wer":
            results.append(_wer_entry(args, args.width))
        else:
            res = score_files(args.hyp, args.ref, args.lang, metric=metric)
            results.append(res.format(args.width, is_json=args.json))
    print_single_results(results, Namespace(format="json" if args.json else "text"))
    return 0
