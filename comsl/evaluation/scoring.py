"""Corpus-level sacreBLEU and chrF on raw reference text, WER for ASR, and the paper's group averages.

BLEU is detokenised corpus sacreBLEU exactly as the ``sacrebleu`` command computes it: lines are
read as the command reads them (UTF-8, trailing whitespace stripped), the tokenizer is 13a unless
the *text* language needs another (``zh`` -> ``zh``, ``ja`` -> ``ja-mecab``), and the signature
is sacreBLEU's own. CoVoST 2 X->En targets are English, so translation scores always use 13a.
"""

from __future__ import annotations

import logging
import math
import os
import unicodedata
from dataclasses import dataclass, field

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Score

from comsl.errors import ComSLError, DataError
from comsl.languages import GROUPS, base_code, normalize_lang

log = logging.getLogger(__name__)

GROUP_NAMES: tuple[str, ...] = ("High", "Med", "Low", "Avg")

# Text languages whose BLEU needs a non-default sacreBLEU tokenizer (same choice as sacreBLEU's -l).
_SPECIAL_TOKENIZERS = {"zh": "zh", "ja": "ja-mecab"}
# Languages written without spaces between words: WER is computed over characters (i.e. CER).
_CHARACTER_LEVEL = {"zh", "ja"}


def _base_lang(lang: str | None) -> str:
    """'zh-CN' / 'zh_CN' / 'ja_XX' -> 'zh' / 'ja'; None -> 'en'."""
    return base_code(lang) if lang else "en"


def bleu_tokenizer_for(lang: str | None) -> str:
    """sacreBLEU tokenizer for text in ``lang`` (the target/reference language, default English)."""
    return _SPECIAL_TOKENIZERS.get(_base_lang(lang), BLEU.TOKENIZER_DEFAULT)


@dataclass(frozen=True)
class MetricResult:
    """One corpus-level score with sacreBLEU's signature; ``format`` prints it as sacreBLEU does."""

    name: str
    """Metric name as sacreBLEU prints it: ``BLEU``, ``chrF2``."""
    score: float
    """Full-precision corpus score (0-100)."""
    signature: str
    """sacreBLEU signature, e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
    raw: Score = field(repr=False, compare=False)
    """The sacreBLEU score object, kept so formatting is byte-identical to the ``sacrebleu`` command."""

    def format(self, width: int = 1, is_json: bool = False) -> str:
        """The line (or JSON object) ``sacrebleu REF -i HYP -w WIDTH [-f json]`` prints."""
        return self.raw.format(width, False, self.signature, is_json)


def clean_segment(text: str) -> str:
    """One segment as it will be written to and read back from a text file: line breaks become
    spaces and trailing whitespace goes (as ``read_lines`` strips it), so in-memory scores equal
    the scores of the written files."""
    return text.replace("\r", " ").replace("\n", " ").rstrip()


def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a hypothesis/reference file as the ``sacrebleu`` command does: UTF-8, one segment per
    ``\\n``-terminated line, trailing whitespace stripped. Raises DataError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", newline="\n") as fh:
            return [line.rstrip() for line in fh]
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from err


def _check_lengths(hyps: list[str], refs: list[str], what: str) -> None:
    if len(hyps) != len(refs):
        raise DataError(
            f"{what}: {len(hyps)} hypotheses but {len(refs)} references; "
            "every hypothesis needs exactly one reference line"
        )
    if not refs:
        raise DataError(f"{what}: no segments to score")


def corpus_bleu(hyps: list[str], refs: list[str], lang: str | None = "en", what: str = "BLEU") -> MetricResult:
    """Corpus sacreBLEU of ``hyps`` against one raw reference each; tokenizer chosen by ``lang``.

    Raises DataError on a length mismatch or empty input, ComSLError when the tokenizer's extra
    package (MeCab for Japanese) is missing.
    """
    _check_lengths(hyps, refs, what)
    tokenize = bleu_tokenizer_for(lang)
    try:
        metric = BLEU(tokenize=tokenize)
    except (ImportError, RuntimeError) as err:
        raise ComSLError(
            f"sacreBLEU tokenizer {tokenize!r} (for {lang} text) is not usable "
            f"({' '.join(str(err).split())}); install it with: pip install 'sacrebleu[ja]'"
        ) from err
    return _bleu_with(hyps, refs, tokenize, metric)


def _bleu_with(hyps: list[str], refs: list[str], tokenize: str, metric: BLEU | None = None) -> MetricResult:
    metric = metric or BLEU(tokenize=tokenize)
    score = metric.corpus_score(hyps, [refs])
    return MetricResult(
        name=score.name, score=float(score.score), signature=metric.get_signature().format(),
        raw=score,
    )


def corpus_chrf(hyps: list[str], refs: list[str], what: str = "chrF") -> MetricResult:
    """Corpus chrF2 (sacreBLEU defaults: char order 6, no word n-grams) on raw references."""
    _check_lengths(hyps, refs, what)
    metric = CHRF()
    score = metric.corpus_score(hyps, [refs])
    return MetricResult(
        name=score.name, score=float(score.score), signature=metric.get_signature().format(),
        raw=score,
    )


def score_files(
    hyp: str | os.PathLike, ref: str | os.PathLike, lang: str | None = "en", metric: str = "bleu"
) -> MetricResult:
    """Score a hypothesis file against a reference file (one segment per line).

    Gives the same score and signature as ``sacrebleu REF -i HYP [-m chrf]`` (with ``-l xx-LANG``
    for zh/ja text). ``lang`` is the language of the text being scored, not the speech.
    """
    hyps, refs = read_lines(hyp), read_lines(ref)
    what = f"{os.fspath(hyp)} vs {os.fspath(ref)}"
    if metric == "bleu":
        return corpus_bleu(hyps, refs, lang, what=what)
    if metric == "chrf":
        return corpus_chrf(hyps, refs, what=what)
    raise ComSLError(f"unknown metric {metric!r}; use 'bleu' or 'chrf'")


def normalize_for_wer(text: str, lang: str | None = None) -> list[str]:
    """Tokens for WER: NFKC, case-folded, apostrophes deleted (``it's`` -> ``its``), other Unicode
    punctuation turned into spaces, whitespace collapsed.

    For zh/ja (no spaces between words) the tokens are characters, so their "WER" is a CER.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("'", "").replace("\u2019", "")
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    if _base_lang(lang) in _CHARACTER_LEVEL:
        return [ch for ch in text if not ch.isspace()]
    return text.split()


def wer_signature(lang: str | None = None) -> str:
    """How WER was computed, in sacreBLEU's signature style."""
    unit = "char" if _base_lang(lang) in _CHARACTER_LEVEL else "word"
    return f"norm:nfkc+casefold+nopunct|unit:{unit}"


def corpus_wer(hyps: list[str], refs: list[str], lang: str | None = None, what: str = "WER") -> float:
    """Corpus WER in percent: total edits / total reference tokens after ``normalize_for_wer``
    (jiwer's corpus WER on those tokens).

    Raises DataError on a length mismatch, empty input, or references with no tokens at all.
    """
    import jiwer

    _check_lengths(hyps, refs, what)
    ref_tokens = [normalize_for_wer(r, lang) for r in refs]
    if not any(ref_tokens):
        raise DataError(f"{what}: references contain no words after normalisation")
    # tokens hold no whitespace, so jiwer's own whitespace split gives them back
    words = jiwer.process_words([" ".join(t) for t in ref_tokens], [" ".join(normalize_for_wer(h, lang)) for h in hyps])
    return 100.0 * words.wer


def group_averages(scores: dict[str, float]) -> dict[str, float | None]:
    """The paper's group averages of per-language scores (keys: CoVoST codes or aliases).

    High/Med/Low average over the group's languages that are present (None when none is);
    Avg averages over every language present (languages outside the 21 count in Avg only),
    as the paper's Avg is over all languages, not over the three group means.
    """
    present: dict[str, float] = {}
    for lang, value in scores.items():
        try:
            present[normalize_lang(lang)] = value
        except ValueError:
            present[lang] = value
    out: dict[str, float | None] = {}
    for name, members in GROUPS.items():
        values = [present[lang] for lang in members if lang in present]
        out[name] = math.fsum(values) / len(values) if values else None
    out["Avg"] = math.fsum(present.values()) / len(present) if present else None
    return out


@dataclass
class Scores:
    """Per-language scores of one system on one split, with group averages."""

    bleu: dict[str, float]
    """Corpus sacreBLEU per language."""
    chrf: dict[str, float]
    """Corpus chrF2 per language."""
    num_sentences: dict[str, int]
    """Number of scored segments per language."""
    bleu_signatures: dict[str, str]
    """sacreBLEU BLEU signature per language (all equal for X->En)."""
    chrf_signature: str
    """sacreBLEU chrF signature."""
    wer: dict[str, float] | None = None
    """WER (%) per language, for the ASR task."""

    @property
    def groups(self) -> dict[str, float | None]:
        """BLEU group averages High/Med/Low/Avg."""
        return group_averages(self.bleu)

    @property
    def chrf_groups(self) -> dict[str, float | None]:
        return group_averages(self.chrf)

    @property
    def wer_groups(self) -> dict[str, float | None] | None:
        return None if self.wer is None else group_averages(self.wer)

    @property
    def signature(self) -> str:
        """The BLEU signature; when languages differ in tokenizer, each distinct one prefixed by its languages."""
        distinct: dict[str, list[str]] = {}
        for lang, sig in self.bleu_signatures.items():
            distinct.setdefault(sig, []).append(lang)
        if len(distinct) == 1:
            return next(iter(distinct))
        return " ; ".join(f"{','.join(langs)}: {sig}" for sig, langs in distinct.items())


def score_languages(
    hyps: dict[str, list[str]], refs: dict[str, list[str]], task: str = "st"
) -> Scores:
    """Score per-language hypotheses against raw references.

    ``task="st"``: references are English translations (13a BLEU). ``task="asr"``: references are
    source transcripts; BLEU uses the source language's tokenizer and WER is added.
    Raises DataError when a language's hypotheses and references differ in number or are missing.
    """
    if task not in ("st", "asr"):
        raise ComSLError(f"unknown task {task!r}; use 'st' or 'asr'")
    missing = sorted(set(refs) ^ set(hyps))
    if missing:
        raise DataError(f"languages with only hypotheses or only references: {', '.join(missing)}")
    bleu, chrf, n, sigs, wer = {}, {}, {}, {}, {}
    chrf_sig = ""
    hyps = {lang: [clean_segment(s) for s in hyps[lang]] for lang in refs}
    refs = {lang: [clean_segment(s) for s in refs[lang]] for lang in refs}
    for lang in refs:
        text_lang = lang if task == "asr" else "en"
        try:
            b = corpus_bleu(hyps[lang], refs[lang], text_lang, what=f"{lang} BLEU")
        except ComSLError as err:
            if task != "asr" or isinstance(err, DataError):
                raise
            # ASR's main metric is WER; BLEU on transcripts falls back to character tokens when
            # MeCab is missing, and the per-language signature (tok:char) says so.
            log.warning("%s; %s transcript BLEU uses tok:char instead", err, lang)
            b = _bleu_with(hyps[lang], refs[lang], "char")
        c = corpus_chrf(hyps[lang], refs[lang], what=f"{lang} chrF")
        bleu[lang], chrf[lang], n[lang], sigs[lang] = b.score, c.score, len(refs[lang]), b.signature
        chrf_sig = c.signature
        if task == "asr":
            wer[lang] = corpus_wer(hyps[lang], refs[lang], lang, what=f"{lang} WER")
    return Scores(
        bleu=bleu, chrf=chrf, num_sentences=n, bleu_signatures=sigs, chrf_signature=chrf_sig,
        wer=wer if task == "asr" else None,
    )
