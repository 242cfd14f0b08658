"""Pseudo-labelled training data (the paper's self-training): Common Voice clips that CoVoST 2 does
not use get machine translations of their transcripts, written as an extra CoVoST-format TSV.

Output: ``<out>/covost_v2.<lang>_en.tsv`` (path, sentence, translation, client_id, split=train), so
``comsl prepare covost2 --cv-root <cv_root> --covost-root <out>`` validates the extra clips and
writes their manifest like any other. The translator is passed in as a function (the command
builds it from a model directory), so this module needs no model code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from comsl.data.covost2 import clean_text, covost_files
from comsl.data.manifest import read_tsv, write_manifest
from comsl.errors import DataError
from comsl.languages import TARGET_LANG

# (transcripts, CoVoST source code) -> English translations, same order and length.
Translator = Callable[[Sequence[str], str], list[str]]


@dataclass(kw_only=True)
class PseudoConfig:
    """What ``comsl prepare pseudo`` reads and writes."""

    cv_root: str
    """Common Voice root with ``<lang>/validated.tsv`` and ``<lang>/clips``."""
    covost_root: str
    """CoVoST 2 TSV directory: clips listed there (any split) are not pseudo-labelled."""
    out: str
    """Directory for the pseudo-labelled ``covost_v2.<lang>_en.tsv`` files and ``pseudo_report.json``."""
    langs: list[str] = field(default_factory=list)
    """CoVoST source-language codes to label."""
    max_per_lang: int | None = None
    """Label at most this many extra clips per language (the first ones in validated.tsv order)."""
    batch_size: int = 32
    """Transcripts translated per call of the translator."""


def extra_clips(cv_root: str, covost_root: str, lang: str) -> list[dict[str, str]]:
    """validated.tsv rows (path, sentence, client_id) whose clip is in no CoVoST split and whose
    transcript is not empty."""
    files = covost_files(covost_root, lang)
    used = set()
    for path in [files] if isinstance(files, str) else files.values():
        used.update(r["path"].strip() for _, r in read_tsv(path, ("path",)))
    validated = os.path.join(cv_root, lang, "validated.tsv")
    if not os.path.isfile(validated):
        raise DataError(f"{validated}: not found; pseudo-labelling reads the clips Common Voice validated")
    out = []
    for _, r in read_tsv(validated, ("path", "sentence")):
        text = clean_text(r["sentence"])
        if r["path"].strip() not in used and text:
            out.append({"path": r["path"].strip(), "sentence": text, "client_id": r.get("client_id", "")})
    return out


def pseudo_label(cfg: PseudoConfig, translate: Translator) -> dict:
    """Translate the extra clips' transcripts and write the TSVs; returns the report (also written)."""
    os.makedirs(cfg.out, exist_ok=True)
    report = {}
    for lang in cfg.langs:
        clips = extra_clips(cfg.cv_root, cfg.covost_root, lang)[: cfg.max_per_lang]
        # Similar lengths per call keep padding (and beam search time) low.
        order = sorted(range(len(clips)), key=lambda i: len(clips[i]["sentence"]))
        translations: list[str] = [""] * len(clips)
        for start in tqdm(range(0, len(order), cfg.batch_size), desc=f"pseudo-labelling {lang}", unit="batch"):
            idx = order[start:start + cfg.batch_size]
            outs = translate([clips[i]["sentence"] for i in idx], lang)
            if len(outs) != len(idx):
                raise DataError(f"translator returned {len(outs)} translations for {len(idx)} transcripts")
            for i, t in zip(idx, outs):
                translations[i] = clean_text(t)
        path = os.path.join(cfg.out, f"covost_v2.{lang}_{TARGET_LANG}.tsv")
        write_manifest(path, [[c["path"], c["sentence"], t, c["client_id"], "train"] for c, t in zip(clips, translations)],
                       columns=("path", "sentence", "translation", "client_id", "split"))
        report[lang] = {"labelled": len(clips), "empty_translation": sum(not t for t in translations)}
    with open(os.path.join(cfg.out, "pseudo_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return report
