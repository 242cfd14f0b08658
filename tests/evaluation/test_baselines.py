"""comsl/evaluation/baselines.py: the constant baseline picks the best single sentence, scored exactly."""

import random

import pytest
import sacrebleu

from comsl.errors import DataError
from comsl.evaluation.baselines import (
    _ConstantScorer, best_constant_sentence, constant_baseline, load_baseline_hypotheses, score_baseline,
)

TRAIN = [
    "the weather is nice today .",
    "i like green tea .",
    "the house is big .",
    "where is the train station ?",
    "i like green tea .",
    "",
]
REFS_FR = ["the house is very big .", "the house is old .", "is the house big ?"]
REFS_DE = ["i like tea .", "i like green apples .", "we like green tea ."]


def test_constant_scorer_equals_sacrebleu():
    rng = random.Random(0)
    words = "the a cat dog sat on mat is was red , . ! ?".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(2, 12))) for _ in range(40)]
    scorer = _ConstantScorer(refs, "13a")
    for _ in range(30):
        cand = " ".join(rng.choices(words, k=rng.randint(1, 14)))
        assert scorer.bleu(cand) == pytest.approx(sacrebleu.corpus_bleu([cand] * len(refs), [refs]).score, abs=1e-9)


def test_constant_picks_the_best_sentence_by_hand():
    best, score = best_constant_sentence(TRAIN, REFS_FR)
    assert best == "the house is big ."
    brute = {c: sacrebleu.corpus_bleu([c] * 3, [REFS_FR]).score for c in set(TRAIN) if c}
    assert score == pytest.approx(max(brute.values()))
    assert best_constant_sentence(TRAIN, REFS_DE)[0] == "i like green tea ."
    # A tiny shortlist still keeps the best one (BLEU-2 prefilter).
    assert best_constant_sentence(TRAIN, REFS_FR, shortlist=1)[0] == "the house is big ."


def test_constant_baseline_structure():
    result = constant_baseline(TRAIN, {"fr": REFS_FR, "de": REFS_DE}, progress=False)
    js = result.to_json()
    assert js["sentence"] == {"fr": "the house is big .", "de": "i like green tea ."}
    assert js["bleu"]["fr"] == sacrebleu.corpus_bleu(["the house is big ."] * 3, [REFS_FR]).score
    assert js["groups"]["High"] == pytest.approx((js["bleu"]["fr"] + js["bleu"]["de"]) / 2)
    assert js["groups"]["Med"] is None
    assert js["num_sentences"] == {"fr": 3, "de": 3}
    assert result.hypotheses is None
    # Per-language pools (ASR): each language draws only from its own.
    per_lang = constant_baseline({"fr": ["the house is big ."], "de": ["i like tea ."]},
                                 {"fr": REFS_FR, "de": REFS_DE}, progress=False)
    assert per_lang.details["sentence"]["de"] == "i like tea ."


def test_constant_baseline_errors():
    with pytest.raises(DataError, match="no non-empty training target"):
        best_constant_sentence(["", "  "], REFS_FR)
    with pytest.raises(DataError, match="no references"):
        best_constant_sentence(TRAIN, [])


def test_named_baseline_scored_like_the_model():
    result = score_baseline("whisper_zero_shot", {"fr": ["the house is big ."] * 3}, {"fr": REFS_FR, "de": REFS_DE})
    assert list(result.scores.bleu) == ["fr"]  # languages without hypotheses are left out
    assert result.to_json()["bleu"]["fr"] == sacrebleu.corpus_bleu(["the house is big ."] * 3, [REFS_FR]).score
    with pytest.raises(DataError, match="none of the languages"):
        score_baseline("x", {"ja": ["a"]}, {"fr": REFS_FR})


def test_load_baseline_hypotheses(tmp_path):
    (tmp_path / "fr.txt").write_text("a\nb  \n", encoding="utf-8")
    assert load_baseline_hypotheses(tmp_path, ["fr", "de"]) == {"fr": ["a", "b"]}
    with pytest.raises(DataError, match="no <lang>.txt"):
        load_baseline_hypotheses(tmp_path, ["de"])
