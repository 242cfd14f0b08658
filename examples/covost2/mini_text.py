"""Stage 1 helper of run.sh: every train-split Django catalog pair of the mini languages as a text-only
manifest, for the stage-1 MT pre-finetune (more text than the synthesised clips, never a dev/test one).

``comsl prepare mini`` synthesises ``--per-lang`` sentences per language, but the catalogs hold ~500 per
language. The split is recomputed exactly as ``prepare mini`` computes it (English sentences of the
chosen languages, near-duplicates clustered, whole clusters per split, same seed), and only ``train``
pairs are written; the dev/test manifests are read back to prove that no English sentence is shared.
Columns are the manifest's; ``audio`` is ``-`` and ``n_samples`` 0 (text only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from comsl.data import mini
from comsl.data.covost2 import clean_text
from comsl.data.manifest import read_manifest, write_manifest
from comsl.errors import ComSLError, DataError
from comsl.languages import parse_langs


def train_pairs(langs: list[str], seed: int) -> list[dict]:
    """Manifest rows of every train-split catalog pair of ``langs`` (as ``prepare mini`` splits them)."""
    defaults = mini.MiniConfig(out="-")
    pairs = {lang: mini.catalog_pairs(lang, seed) for lang in langs}
    english = sorted({en for p in pairs.values() for en in p})
    split_of = mini.split_sentences(mini.cluster_sentences(english, defaults.jaccard), seed,
                                    defaults.dev_fraction, defaults.test_fraction)
    rows = []
    for lang in langs:
        for k, (en, src) in enumerate(sorted(pairs[lang].items())):
            if split_of[en] == "train":
                rows.append({"id": f"{lang}_text_{k:05d}", "audio": "-", "n_samples": 0, "duration": 0.0,
                             "src_lang": lang, "tgt_lang": "en", "transcript": clean_text(src),
                             "translation": clean_text(en)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--langs", required=True, help="comma-separated CoVoST codes (those given to prepare mini)")
    p.add_argument("--seed", type=int, default=0, help="the seed given to prepare mini")
    p.add_argument("--manifests", required=True, help="directory with the mini corpus' dev.tsv and test.tsv")
    p.add_argument("--out", required=True, help="output manifest (.tsv)")
    args = p.parse_args(argv)
    try:
        langs = parse_langs(args.langs)
        rows = train_pairs(langs, args.seed)
        held_out = {r["translation"] for split in ("dev", "test")
                    for r in read_manifest(str(Path(args.manifests) / f"{split}.tsv"))}
        shared = sorted({r["translation"] for r in rows} & held_out)
        if shared:
            raise DataError(f"{args.manifests}: {len(shared)} dev/test sentences would enter stage-1 text "
                            f"(e.g. {shared[0]!r}); pass the --seed and --langs given to prepare mini")
        write_manifest(args.out, rows)
    except (ComSLError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"stage-1 text: {len(rows)} train-split pairs of {len(langs)} languages -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
