"""`comsl evaluate`: beam-decode a split with a checkpoint and write the BLEU report (see evaluation/)."""

from __future__ import annotations

from comsl.errors import ComSLError
from comsl.languages import parse_langs


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="decode a test split and report sacreBLEU per language, group averages and baselines",
        description="Writes OUT/report.json, report.md, hypotheses/<lang>.txt, references/<lang>.txt and "
                    "bleu_per_language.png, then prints the per-language BLEU table.",
    )
    p.add_argument("--checkpoint", required=True,
                   help="exported model dir, or a training run dir (best/, final/, export/, checkpoints/step_N/model/)")
    p.add_argument("--data", required=True, help="manifest .tsv, or the directory 'comsl prepare' wrote")
    p.add_argument("--split", default="test", help="split when --data is a directory (default: test)")
    p.add_argument("--langs", nargs="+", default=None,
                   help="source languages to evaluate (CoVoST codes, comma or space separated; default: all present)")
    p.add_argument("--task", choices=("st", "asr"), default="st", help="st (to English) or asr (transcripts, adds WER)")
    p.add_argument("--beam", type=int, default=5, help="beam size (paper: 5)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="longest output in tokens")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam-search length penalty")
    p.add_argument("--batch-seconds", type=float, default=120.0, help="padded audio seconds per batch")
    p.add_argument("--max-batch-size", type=int, default=64, help="utterances per batch at most")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--baselines-from", default=None, metavar="TRAIN_MANIFEST",
                   help="training manifest (or prepared dir) for the 'constant' baseline")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=DIR",
                   help="score another system's outputs DIR/<lang>.txt (manifest order) as baseline NAME; repeatable")
    p.add_argument("--no-mt", action="store_true",
                   help="do not also translate the test transcripts with the model (the 'MT' column, ST only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output directory for the report")
    p.set_defaults(func=run)


def _langs(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    try:
        return parse_langs(",".join(values))
    except ValueError as err:
        raise ComSLError(f"--langs: {err}") from err


def _baseline_dirs(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory:
            raise ComSLError(f"--baseline: expected NAME=DIR, got {value!r}")
        out[name] = directory
    return out


def run(args) -> int:
    from comsl.evaluation.decode import DecodeConfig
    from comsl.evaluation.evaluate import evaluate

    config = DecodeConfig(
        task=args.task, beam=args.beam, max_new_tokens=args.max_new_tokens, length_penalty=args.length_penalty,
        batch_seconds=args.batch_seconds, max_batch_size=args.max_batch_size, device=args.device,
    )
    evaluate(args.checkpoint, args.data, args.out, split=args.split, langs=_langs(args.langs), config=config,
             baselines_from=args.baselines_from, baseline_dirs=_baseline_dirs(args.baseline),
             mt=not args.no_mt, progress=not args.no_progress)
    return 0
