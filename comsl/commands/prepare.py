"""`comsl prepare covost2 | pseudo`: build validated manifests, or pseudo-labelled extra training data."""

from __future__ import annotations

import os

from comsl.errors import ConfigError
from comsl.languages import parse_langs


def _langs(spec: str | None) -> list[str]:
    if not spec:
        return []
    try:
        return parse_langs(spec)
    except ValueError as err:
        raise ConfigError(f"--langs: {err}") from err


def register(sub) -> None:
    p = sub.add_parser("prepare", help="prepare data: CoVoST 2 manifests or pseudo-labelled extra clips")
    kinds = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    c = kinds.add_parser("covost2", help="validate Common Voice + CoVoST 2 and write per-split manifests")
    c.add_argument("--cv-root", required=True, help="Common Voice root with <lang>/clips/ and <lang>/validated.tsv")
    c.add_argument("--covost-root", required=True, help="directory with covost_v2.<lang>_en[.split].tsv")
    c.add_argument("--langs", default=None, help="comma-separated CoVoST codes (default: all found)")
    c.add_argument("--out", required=True, help="output directory for {train,dev,test}.tsv and the report")
    c.add_argument("--max-seconds", type=float, default=11.0, help="skip longer clips (default 11)")
    c.add_argument("--min-seconds", type=float, default=0.1, help="skip shorter clips (default 0.1)")
    c.add_argument("--header-only", action="store_true",
                   help="trust audio headers instead of decoding every clip (faster, less safe)")
    c.add_argument("--workers", type=int, default=0,
                   help="processes decoding/validating clips (default 0: one per CPU core; 1: no pool)")
    c.set_defaults(func=run_covost2)

    s = kinds.add_parser("pseudo", help="translate transcripts of extra Common Voice clips with an MT model "
                                         "into an extra CoVoST-format training TSV")
    s.add_argument("--model", required=True, help="exported ComSL model directory (with its tokenizer)")
    s.add_argument("--cv-root", required=True, help="Common Voice root with <lang>/validated.tsv")
    s.add_argument("--covost-root", required=True, help="CoVoST TSVs: clips listed there are left out")
    s.add_argument("--langs", required=True, help="comma-separated CoVoST codes")
    s.add_argument("--out", required=True, help="output directory (use it as --covost-root of prepare covost2)")
    s.add_argument("--max-per-lang", type=int, default=None, help="label at most this many clips per language")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--beams", type=int, default=5)
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=run_pseudo)


def _out_dir(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--out {path}: exists and is not a directory; give a directory to write into")
    return path


def run_covost2(args) -> int:
    from comsl.data.covost2 import PrepareConfig, prepare_covost2

    if args.max_seconds <= args.min_seconds:
        raise ConfigError(f"--max-seconds ({args.max_seconds}) must exceed --min-seconds ({args.min_seconds})")
    prepare_covost2(PrepareConfig(
        cv_root=args.cv_root, covost_root=args.covost_root, out=_out_dir(args.out), langs=_langs(args.langs),
        max_seconds=args.max_seconds, min_seconds=args.min_seconds, full_decode=not args.header_only,
        num_workers=args.workers,
    ))
    return 0


def run_pseudo(args) -> int:
    from comsl.data.pseudo import PseudoConfig, pseudo_label
    from comsl.evaluation.decode import DecodeConfig, Decoder

    decoder = Decoder.from_checkpoint(args.model, DecodeConfig(beam=args.beams, max_new_tokens=args.max_new_tokens,
                                                               max_batch_size=args.batch_size, device=args.device))
    report = pseudo_label(
        PseudoConfig(cv_root=args.cv_root, covost_root=args.covost_root, out=args.out, langs=_langs(args.langs),
                     max_per_lang=args.max_per_lang, batch_size=args.batch_size),
        lambda texts, lang: decoder.translate_texts(texts, [lang] * len(texts)),
    )
    for lang, r in report.items():
        print(f"{lang}: {r['labelled']} clips labelled ({r['empty_translation']} empty translations)")
    return 0
