"""Stage-1 text of the mini recipe: every train-split pair of the built corpus (``pairs.tsv``, every
source) of the chosen languages as a text-only manifest (``audio`` is ``-``, ``n_samples`` 0), far more
text than the synthesised clips. The dev/test manifests are read back to prove that no held-out English
sentence, nor a near-copy of it (``mini.split.normalise``), is among its targets.
Run by run.sh as ``python -m mini.text --corpus DIR --langs ... --manifests DIR --out FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from comsl.data.covost2 import clean_text
from comsl.data.manifest import read_manifest, read_tsv, write_manifest
from comsl.errors import ComSLError, DataError
from comsl.languages import parse_langs
from mini.corpus import PAIR_COLUMNS
from mini.split import normalise


def read_pairs(corpus: str | Path) -> list[dict[str, str]]:
    """The rows of ``<corpus>/pairs.tsv`` (PAIR_COLUMNS). Raises DataError naming a bad line."""
    return [row for _, row in read_tsv(str(Path(corpus) / "pairs.tsv"), tuple(PAIR_COLUMNS))]


def train_rows(pairs: list[dict[str, str]], langs: list[str]) -> list[dict]:
    """Manifest rows of the train-split pairs of ``langs``."""
    rows = []
    for k, p in enumerate(p for p in pairs if p["split"] == "train" and p["lang"] in langs):
        rows.append({"id": f"{p['lang']}_text_{k:06d}", "audio": "-", "n_samples": 0, "duration": 0.0,
                     "src_lang": p["lang"], "tgt_lang": "en", "transcript": clean_text(p["translation"]),
                     "translation": clean_text(p["english"])})
    return rows


def leaked(targets: list[str], held_out: list[str]) -> list[str]:
    """The targets that are a held-out sentence or a near-copy of one (equal after ``normalise``)."""
    banned = {normalise(s) for s in held_out}
    return sorted({t for t in targets if normalise(t) in banned})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mini.text", description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="the mini corpus directory (with pairs.tsv)")
    p.add_argument("--langs", required=True, help="comma-separated CoVoST codes")
    p.add_argument("--manifests", required=True, help="directory with the corpus' dev.tsv and test.tsv")
    p.add_argument("--out", required=True, help="output manifest (.tsv)")
    args = p.parse_args(argv)
    try:
        langs = parse_langs(args.langs)
        rows = train_rows(read_pairs(args.corpus), langs)
        held_out = [r["translation"] for split in ("dev", "test")
                    for r in read_manifest(str(Path(args.manifests) / f"{split}.tsv"))]
        shared = leaked([r["translation"] for r in rows], held_out)
        if shared:
            raise DataError(f"{args.manifests}: {len(shared)} dev/test sentences would enter stage-1 text "
                            f"(e.g. {shared[0]!r}); rebuild the corpus and its manifests together")
        write_manifest(args.out, rows)
    except (ComSLError, ValueError) as err:
        print(f"mini.text: error: {err}", file=sys.stderr)
        return 1
    print(f"stage-1 text: {len(rows)} train-split pairs of {len(langs)} languages -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
