"""``comsl evaluate``: decode a split with a checkpoint, score per language, add baselines, write the report.

Reads top to bottom: resolve checkpoint -> read manifest -> decode -> score on raw references ->
the same model on the transcripts (MT) -> baselines -> bootstrap intervals and significance ->
write report.json / report.md / hypotheses / plot -> print the BLEU table.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from comsl.errors import DataError
from comsl.evaluation.baselines import BaselineResult, constant_baseline, load_baseline_hypotheses, score_baseline
from comsl.evaluation.decode import DecodeConfig, Decoder, Utterance, manifest_path, read_utterances
from comsl.evaluation.report import print_table, write_report
from comsl.evaluation.scoring import score_languages
from comsl.evaluation.significance import bootstrap

log = logging.getLogger(__name__)


def group_by_lang(utts: Sequence[Utterance], values: Sequence[str]) -> dict[str, list[str]]:
    """Per-language lists of ``values`` (aligned with ``utts``), languages in first-seen order."""
    out: dict[str, list[str]] = {}
    for utt, value in zip(utts, values):
        out.setdefault(utt.src_lang, []).append(value)
    return out


def train_targets(train: str | os.PathLike, task: str, langs: Iterable[str] | None) -> list[str] | dict[str, list[str]]:
    """Candidate sentences for the constant baseline from a training manifest (file or directory).

    ST: every training translation, pooled over all languages (the best constant for any language).
    ASR: each language's own transcripts.
    """
    utts = read_utterances(manifest_path(train, "train"), langs if task == "asr" else None)
    if task == "asr":
        return group_by_lang(utts, [u.transcript for u in utts])
    return [u.translation for u in utts]


def evaluate(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "test",
    langs: Iterable[str] | None = None,
    config: DecodeConfig | None = None,
    baselines_from: str | os.PathLike | None = None,
    extra_baselines: Iterable[BaselineResult] = (),
    baseline_dirs: Mapping[str, str | os.PathLike] | None = None,
    mt: bool = True,
    progress: bool = True,
    print_results: bool = True,
) -> dict:
    """Evaluate ``checkpoint`` on ``data`` (manifest or prepared directory + ``split``); returns the report.

    ``baselines_from``: a training manifest (or directory with train.tsv) for the ``constant``
    baseline. ``extra_baselines``: already-scored baselines (e.g. Whisper zero-shot) to include.
    ``baseline_dirs``: {name: directory of <lang>.txt hypotheses in manifest order}, scored here.
    ``mt``: also translate the transcripts with the same model (ST only; the ``mt`` system).
    Raises CheckpointError / DataError / ComSLError with what to fix.
    """
    config = config or DecodeConfig()
    config.validate()
    decoder = Decoder.from_checkpoint(checkpoint, config)
    manifest = manifest_path(data, split)
    utts = read_utterances(manifest, langs)
    log.info("decoding %d utterances of %s with %s", len(utts), manifest, decoder.model_dir)

    start = time.perf_counter()
    hyps = decoder.decode(utts, progress=progress)
    seconds = time.perf_counter() - start

    hyps_by_lang = group_by_lang(utts, hyps)
    refs_by_lang = group_by_lang(utts, [u.reference(config.task) for u in utts])
    empty_refs = [lang for lang, refs in refs_by_lang.items() if not any(r.strip() for r in refs)]
    if empty_refs:
        raise DataError(f"{manifest}: no {config.task} references for {', '.join(empty_refs)}")
    scores = score_languages(hyps_by_lang, refs_by_lang, config.task)
    text_input = None
    if mt and config.task == "st":
        mt_hyps = decoder.translate_texts([u.transcript for u in utts], [u.src_lang for u in utts])
        text_input = score_baseline("mt", group_by_lang(utts, mt_hyps), refs_by_lang, config.task)

    baselines = list(extra_baselines)
    if baselines_from is not None:
        pool = train_targets(baselines_from, config.task, list(refs_by_lang))
        baselines.insert(0, constant_baseline(pool, refs_by_lang, config.task, progress=progress))
    for name, directory in (baseline_dirs or {}).items():
        hyps_b = load_baseline_hypotheses(directory, list(refs_by_lang))
        baselines.append(score_baseline(name, hyps_b, refs_by_lang, config.task))

    meta = {
        "checkpoint": str(decoder.model_dir),
        "data": str(manifest),
        "split": split,
        "beam": config.beam,
        "max_new_tokens": config.max_new_tokens,
        "length_penalty": config.length_penalty,
        "decode_seconds": round(seconds, 2),
        "truncated_utterances": list(decoder.truncated),
        "failed_utterances": list(decoder.failed),
    }
    confidence = bootstrap_systems(scores, hyps_by_lang, refs_by_lang, [b for b in [text_input, *baselines] if b])
    report = write_report(out, scores, hyps_by_lang, refs_by_lang, task=config.task, baselines=baselines, meta=meta,
                          mt=text_input, confidence=confidence)
    if print_results:
        print_table(report)
        print(f"report: {Path(out) / 'report.json'} (and report.md, bleu_per_language.png, hypotheses/)")
    return report


def bootstrap_systems(scores, hyps: Mapping[str, list[str]], refs: Mapping[str, list[str]],
                      others: Sequence[BaselineResult]) -> dict:
    """95% intervals of the model (``"model"``) and of ``others`` (the ``mt`` system, baselines), and each
    other's paired-bootstrap p-value against the model (comsl.evaluation.significance)."""
    systems = {"model": hyps, **{b.name: b.hypotheses for b in others if b.hypotheses is not None}}
    if "constant" in {b.name for b in others}:  # it keeps one sentence per language, not its hypotheses
        const = next(b for b in others if b.name == "constant")
        systems["constant"] = {lang: [s] * len(refs[lang]) for lang, s in const.details["sentence"].items()}
    bleu = {"model": scores.bleu, **{b.name: b.scores.bleu for b in others}}
    return bootstrap(systems, refs, bleu, {lang: signature_tokenizer(sig) for lang, sig in scores.bleu_signatures.items()},
                     "model")


def signature_tokenizer(signature: str) -> str:
    """The sacreBLEU ``tokenize`` name behind a signature's ``tok:`` field (``ja-mecab-0.996-IPA`` -> ``ja-mecab``)."""
    tok = signature.split("tok:")[1].split("|")[0]
    return next((name for name in ("ja-mecab", "ko-mecab") if tok.startswith(name)), tok)


def translate_files(
    checkpoint: str | os.PathLike, paths: Sequence[str | os.PathLike], src_lang: str,
    config: DecodeConfig | None = None, progress: bool = False,
) -> list[str]:
    """Translations (or transcripts for ``config.task == "asr"``) of audio files, in their order."""
    from comsl.evaluation.decode import file_utterances

    config = config or DecodeConfig()
    decoder = Decoder.from_checkpoint(checkpoint, config)
    return decoder.decode(file_utterances(paths, src_lang), progress=progress)
