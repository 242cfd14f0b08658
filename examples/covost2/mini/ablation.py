"""The paper's ablation on the mini corpus (examples/covost2/ablation.sh): the rows, each adding one part of
ComSL to the row above as stage-2 overrides on configs/mini.yaml, and the table of their test BLEU.

    python -m mini.ablation rows                 one line per row: NAME<TAB>OVERRIDES (space-separated)
    python -m mini.ablation table EXPDIR         the table of EXPDIR/rows/<NAME>/eval/report.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# What each part switches on. A row has every part of the rows above it; the last row is configs/mini.yaml
# unchanged (the whole ComSL objective). ST (with weight 0.35) is on in every row.
PARTS: list[tuple[str, str, list[str]]] = [
    ("st_only", "ST only", []),
    ("mt", "+ MT", ["objectives.w_mt"]),
    ("ddm", "+ DDM", ["objectives.lambda_st"]),
    ("asr", "+ ASR", ["objectives.w_asr"]),
    ("freeze", "+ speech freezing", ["train.freeze_speech_fraction"]),
    ("mt_reg", "+ MT regularisation", ["objectives.lambda_mt"]),
    ("cml", "+ CML (ComSL)", ["objectives.w_cml"]),
]
OFF = {"objectives.w_mt": "0", "objectives.lambda_st": "0", "objectives.w_asr": "0",
       "train.freeze_speech_fraction": "0", "objectives.lambda_mt": "0", "objectives.w_cml": "0"}
"""The value that switches each part off."""


def rows() -> list[tuple[str, str, list[str]]]:
    """(name, label, overrides on configs/mini.yaml) per row, in order."""
    out = []
    for k, (name, label, _) in enumerate(PARTS):
        on = {key for _, _, keys in PARTS[: k + 1] for key in keys}
        out.append((name, label, [f"{key}={value}" for key, value in OFF.items() if key not in on]))
    return out


def _avg_ci(report: dict) -> str:
    # the evaluator's 95% bootstrap interval of the average, where the report carries one
    ci = (report.get("ci") or {}).get("Avg")
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "-"


def table(exp: Path) -> str:
    """A Markdown table: each row's average test BLEU, its 95% interval and the change from the row above."""
    lines = ["| row | test BLEU (avg) | 95% CI | change |", "|---|---|---|---|"]
    previous = None
    for name, label, _ in rows():
        path = exp / "rows" / name / "eval" / "report.json"
        if not path.is_file():
            lines.append(f"| {label} | (not run) | | |")
            continue
        report = json.loads(path.read_text())
        avg = report["groups"]["Avg"]
        change = "" if previous is None else f"{avg - previous:+.1f}"
        lines.append(f"| {label} | {avg:.1f} | {_avg_ci(report)} | {change} |")
        previous = avg
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mini.ablation", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("rows", help="print NAME<TAB>OVERRIDES per row")
    t = sub.add_parser("table", help="print the table of an ablation directory")
    t.add_argument("exp", type=Path, help="the directory given to ablation.sh --out")
    args = p.parse_args(argv)
    if args.what == "rows":
        for name, _, overrides in rows():
            print(f"{name}\t{' '.join(overrides)}")
    else:
        print(table(args.exp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
