"""95% confidence intervals of corpus BLEU and paired-bootstrap significance, per language and for Avg.

Per language this is sacreBLEU's paired bootstrap resampling (``sacrebleu REF -i MODEL BASE --paired-bs``,
``sacrebleu.significance.PairedTest(test_type="bs")``): 1000 resamples of the test set drawn with
``numpy.random.default_rng(12345)`` (sacreBLEU's default seed), the same resample for every system,
corpus BLEU recomputed from the summed sentence statistics (``BLEU.compute_bleu``), the interval from
``sacrebleu.significance.estimate_ci`` (bootstrap mean ± half the 2.5-97.5 percentile range) and the
p-value as sacreBLEU computes it. The tests pin equality with sacreBLEU's own API.

Avg, the mean of per-language BLEU, extends this the natural way: every language is resampled as
above (so its numbers stay sacreBLEU's) and each resample's per-language scores are averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sacrebleu.metrics import BLEU
from sacrebleu.significance import estimate_ci

from comsl.evaluation.scoring import clean_segment

N_BOOTSTRAP = 1000
SEED = 12345  # sacreBLEU's default SACREBLEU_SEED
AVG = "Avg"


@dataclass(frozen=True)
class Interval:
    """A bootstrap estimate: the resamples' mean and the half-width of their 95% interval."""

    mean: float
    ci: float

    def to_json(self) -> dict:
        return {"mean": self.mean, "ci": self.ci, "low": self.mean - self.ci, "high": self.mean + self.ci}


def sentence_stats(hyps: Sequence[str], refs: Sequence[str], tokenize: str) -> np.ndarray:
    """(N, 2 + 2 * 4) float32: BLEU's sufficient statistics per segment, in sacreBLEU's order
    (hypothesis length, reference length, matches per order, totals per order)."""
    # effective_order only changes sentence *scores* (and silences sacreBLEU's advice); the counts are the same
    metric = BLEU(tokenize=tokenize, effective_order=True)
    rows = []
    for h, r in zip(hyps, refs):
        s = metric.sentence_score(clean_segment(h), [clean_segment(r)])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.array(rows, dtype="float32")


def resampled_bleu(stats: np.ndarray, idxs: np.ndarray, tokenize: str) -> np.ndarray:
    """Corpus BLEU of each resample ``idxs`` (n_samples, N) of segment statistics (N, 10)."""
    metric = BLEU(tokenize=tokenize)
    order = metric.max_ngram_order
    scores = []
    for s in stats[idxs].sum(1):
        scores.append(metric.compute_bleu(
            correct=s[2: 2 + order], total=s[2 + order:], sys_len=int(s[0]), ref_len=int(s[1]),
            smooth_method=metric.smooth_method, smooth_value=metric.smooth_value,
            effective_order=metric.effective_order, max_ngram_order=order).score)
    return np.array(scores)


def p_value(samples: np.ndarray, samples_ref: np.ndarray, real_difference: float) -> float:
    """sacreBLEU's paired-bootstrap p-value: how often the centred resampled |difference| exceeds the real one."""
    diffs = np.abs(samples - samples_ref)
    return (int(np.sum(diffs - diffs.mean() > real_difference)) + 1) / (len(diffs) + 1)


def bootstrap(
    systems: Mapping[str, Mapping[str, Sequence[str]]],
    refs: Mapping[str, Sequence[str]],
    scores: Mapping[str, Mapping[str, float]],
    tokenizers: Mapping[str, str],
    reference_system: str,
    n_samples: int = N_BOOTSTRAP,
    seed: int = SEED,
) -> dict:
    """Intervals of every system and p-values of every other system against ``reference_system``.

    ``systems``: {name: {lang: hypotheses}} (a system may cover fewer languages); ``refs``: {lang: refs};
    ``scores``: {name: {lang: corpus BLEU}}; ``tokenizers``: {lang: sacreBLEU tokenizer}. Returns
    ``{name: {"bleu_ci": {lang: Interval json}, "avg_ci": ..., "p_value": {lang: p, "Avg": p}}}``
    (no ``p_value`` for ``reference_system``; the Avg p-value is over the languages both cover).
    """
    samples: dict[str, dict[str, np.ndarray]] = {name: {} for name in systems}
    for lang, lang_refs in refs.items():
        idxs = np.random.default_rng(seed).choice(len(lang_refs), size=(n_samples, len(lang_refs)), replace=True)
        for name, hyps in systems.items():
            if lang in hyps:
                samples[name][lang] = resampled_bleu(sentence_stats(hyps[lang], lang_refs, tokenizers[lang]), idxs,
                                                     tokenizers[lang])
    ref_samples, ref_scores = samples[reference_system], scores[reference_system]
    out = {}
    for name, own in samples.items():
        avg = np.mean(list(own.values()), axis=0)
        entry = {"bleu_ci": {lang: Interval(*map(float, estimate_ci(s))).to_json() for lang, s in own.items()},
                 "avg_ci": Interval(*map(float, estimate_ci(avg))).to_json()}
        if name != reference_system:
            common = [lang for lang in own if lang in ref_samples]
            entry["p_value"] = {lang: p_value(own[lang], ref_samples[lang], abs(scores[name][lang] - ref_scores[lang]))
                                for lang in common}
            real = abs(np.mean([scores[name][l] for l in common]) - np.mean([ref_scores[l] for l in common]))
            entry["p_value"][AVG] = p_value(np.mean([own[l] for l in common], axis=0),
                                            np.mean([ref_samples[l] for l in common], axis=0), float(real))
        out[name] = entry
    return out
