"""Reference points a trained model must beat, scored exactly like the model.

``constant``: for each language, the single training target sentence that maximises corpus BLEU
when emitted for every test utterance. It is chosen *with the test references*, so it is an upper
bound for a model that collapsed to one output and ignores the audio.

Any other baseline (e.g. Whisper zero-shot) supplies hypotheses per language and goes through
``score_baseline``; ``report.py`` writes every ``BaselineResult`` under ``baselines.<name>``.
"""

from __future__ import annotations

import heapq
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from sacrebleu.metrics import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams
from tqdm import tqdm

from comsl.errors import DataError
from comsl.evaluation.scoring import Scores, bleu_tokenizer_for, read_lines, score_languages

MAX_ORDER = 4


@dataclass
class BaselineResult:
    """A named baseline's scores (computed like the model's) and what it emitted."""

    name: str
    """Key under ``baselines`` in report.json, e.g. ``constant``."""
    scores: Scores
    """Per-language BLEU/chrF (and WER for ASR) with group averages."""
    hypotheses: dict[str, list[str]] | None = None
    """Per-language outputs, when worth keeping (not written for ``constant``)."""
    details: dict = field(default_factory=dict)
    """Extra JSON-able facts, e.g. ``{"sentence": {lang: str}}`` for ``constant``."""

    def to_json(self) -> dict:
        """The object stored at ``report["baselines"][name]``."""
        out = {
            "bleu": self.scores.bleu,
            "groups": self.scores.groups,
            "chrf": self.scores.chrf,
            "chrf_groups": self.scores.chrf_groups,
            "signature": self.scores.signature,
            "num_sentences": self.scores.num_sentences,
        }
        if self.scores.wer is not None:
            out["wer"] = self.scores.wer
            out["wer_groups"] = self.scores.wer_groups
        out.update(self.details)
        return out


def score_baseline(
    name: str,
    hyps: Mapping[str, list[str]],
    refs: Mapping[str, list[str]],
    task: str = "st",
    details: dict | None = None,
    keep_hypotheses: bool = True,
) -> BaselineResult:
    """Score any baseline's per-language hypotheses against the same raw references as the model.

    Only languages present in both are scored, so a baseline that covers fewer languages (e.g. no
    Whisper for some) is averaged over what it has. Raises DataError when no language overlaps.
    """
    langs = [lang for lang in refs if lang in hyps]
    if not langs:
        raise DataError(f"baseline {name!r} has hypotheses for none of the languages {', '.join(refs)}")
    scores = score_languages({l: list(hyps[l]) for l in langs}, {l: list(refs[l]) for l in langs}, task)
    kept = {l: list(hyps[l]) for l in langs} if keep_hypotheses else None
    return BaselineResult(name=name, scores=scores, hypotheses=kept, details=dict(details or {}))


def load_baseline_hypotheses(directory: str | os.PathLike, langs: Iterable[str]) -> dict[str, list[str]]:
    """``<directory>/<lang>.txt`` for each of ``langs`` that has one (the layout of report
    ``hypotheses/``: one line per utterance, in manifest order). Raises DataError when none exists."""
    directory = Path(directory)
    found = {lang: read_lines(directory / f"{lang}.txt") for lang in langs if (directory / f"{lang}.txt").is_file()}
    if not found:
        raise DataError(f"{directory}: no <lang>.txt hypothesis files for any of {', '.join(langs)}")
    return found


class _ConstantScorer:
    """Exact corpus BLEU of "emit sentence c for every reference", for many candidates c.

    For a constant hypothesis the clipped matches of an n-gram g are sum_r min(count_c(g), count_r(g)),
    so an index g -> {count in a ref: number of refs} gives every candidate's statistics without
    touching each reference again. The statistics equal sacreBLEU's, so its ``compute_bleu`` gives
    the same score as ``corpus_bleu([c] * N, [refs])`` (the chosen sentence is re-scored that way).
    """

    def __init__(self, refs: list[str], tokenize: str):
        self.metric = BLEU(tokenize=tokenize)
        self.n_refs = len(refs)
        self.ref_len = 0
        self.index: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        for ref in refs:
            ngrams, length = extract_all_word_ngrams(self._tokenize(ref), 1, MAX_ORDER)
            self.ref_len += length
            for gram, count in ngrams.items():
                self.index[gram][count] += 1

    def _tokenize(self, segment: str) -> str:
        # what BLEU does to each segment before counting n-grams (case kept: BLEU's default)
        return self.metric.tokenizer(segment.rstrip())

    def stats(self, candidate: str, max_order: int = MAX_ORDER) -> tuple[list[int], list[int], int]:
        """(correct per order, total per order, system length) summed over all references."""
        ngrams, length = extract_all_word_ngrams(self._tokenize(candidate), 1, max_order)
        correct = [0] * MAX_ORDER
        total = [0] * MAX_ORDER
        for gram, count in ngrams.items():
            n = len(gram) - 1
            total[n] += count * self.n_refs
            hist = self.index.get(gram)
            if hist:
                correct[n] += sum(min(count, k) * m for k, m in hist.items())
        return correct, total, length * self.n_refs

    def bleu(self, candidate: str) -> float:
        correct, total, sys_len = self.stats(candidate)
        return self.metric.compute_bleu(
            correct, total, sys_len, self.ref_len, smooth_method=self.metric.smooth_method,
            smooth_value=self.metric.smooth_value, effective_order=self.metric.effective_order,
        ).score

    def bigram_bleu(self, candidate: str) -> float:
        """Cheap prefilter: log of BLEU-2 with brevity penalty (unsmoothed, +1 to avoid log 0)."""
        correct, total, sys_len = self.stats(candidate, max_order=2)
        if sys_len == 0:
            return -math.inf
        log_p = sum(math.log((correct[n] + 1) / (total[n] + 1)) for n in range(2)) / 2
        bp = min(0.0, 1.0 - self.ref_len / sys_len)
        return log_p + bp


def best_constant_sentence(
    candidates: Iterable[str],
    refs: list[str],
    tokenize: str = "13a",
    shortlist: int = 2000,
    max_candidates: int = 50000,
) -> tuple[str, float]:
    """The candidate maximising corpus BLEU when emitted for every reference, and that BLEU.

    Unique non-empty candidates (at most ``max_candidates``, the most frequent first, so full
    CoVoST 2 training sets stay at seconds per language) are ranked by a BLEU-2 prefilter when
    there are more than ``shortlist``; the shortlist is scored with exact corpus BLEU. Ties go to
    the shorter, then alphabetically first sentence, so the choice is deterministic.
    Raises DataError when there is no candidate or no reference.
    """
    if not refs:
        raise DataError("constant baseline: no references to score against")
    counts = Counter(c.strip() for c in candidates if c and c.strip())
    if not counts:
        raise DataError("constant baseline: no non-empty training target sentences to choose from")
    unique = sorted(counts, key=lambda c: (-counts[c], len(c), c))[:max_candidates]
    scorer = _ConstantScorer(refs, tokenize)
    if len(unique) > shortlist:
        unique = heapq.nlargest(shortlist, unique, key=lambda c: (scorer.bigram_bleu(c), -len(c)))
    scored = {c: scorer.bleu(c) for c in unique}
    best = min(unique, key=lambda c: (-scored[c], len(c), c))
    return best, scored[best]


def constant_baseline(
    candidates: list[str] | Mapping[str, list[str]],
    refs: Mapping[str, list[str]],
    task: str = "st",
    shortlist: int = 2000,
    progress: bool = True,
) -> BaselineResult:
    """The ``constant`` baseline: per language, the best single training target sentence.

    ``candidates`` is one pool shared by all languages (X->En: every training translation, which
    makes the bound hold whatever the language) or a pool per language (ASR: each language's own
    transcripts). Scores are then computed by ``score_languages`` on ``[sentence] * N``, exactly
    as the model's. ``details["sentence"]`` holds the chosen sentence per language.
    """
    sentences: dict[str, str] = {}
    for lang in tqdm(list(refs), desc="constant baseline", unit="lang", disable=not progress):
        pool = candidates.get(lang, []) if isinstance(candidates, Mapping) else candidates
        text_lang = lang if task == "asr" else "en"
        sentences[lang], _ = best_constant_sentence(
            pool, refs[lang], tokenize=bleu_tokenizer_for(text_lang), shortlist=shortlist
        )
    hyps = {lang: [sentences[lang]] * len(refs[lang]) for lang in refs}
    return score_baseline(
        "constant", hyps, refs, task, details={"sentence": sentences}, keep_hypotheses=False
    )
