"""comsl/evaluation/significance.py against sacreBLEU's own paired bootstrap (PairedTest, = `--paired-bs`)."""

import numpy as np
import pytest
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from comsl.evaluation.scoring import corpus_bleu
from comsl.evaluation.significance import bootstrap

REFS = ["the cat is on the mat", "hello world", "good morning to you", "the dog sleeps in the garden",
        "it is raining today", "please enter a valid email address", "this field is required", "thank you very much"]
MODEL = ["the cat is on a mat", "hello world", "good morning", "a dog sleeps in the garden",
         "it rains today", "enter a valid email address", "this field is needed", "thanks very much"]
WEAK = ["the the the", "hello", "good morning to you", "the cat", "today", "a valid address", "field", "thank you"]
CLOSE = ["the cat is on the mat", "hello world", "good morning", "a dog sleeps in a garden",
         "it rains today", "enter a valid email address", "this field is needed", "thanks very much"]
DE_REFS = ["i like green tea", "the house is very big", "where is the station", "see you tomorrow morning"]
DE_MODEL = ["i like tea", "the house is big", "where is the station", "see you tomorrow"]
DE_WEAK = ["tea", "a house", "the station", "tomorrow"]


def _run(systems, refs):
    scores = {name: {lang: corpus_bleu(h, refs[lang]).score for lang, h in hyps.items()} for name, hyps in systems.items()}
    return bootstrap(systems, refs, scores, {lang: "13a" for lang in refs}, "model")


def test_per_language_interval_and_p_value_equal_sacrebleu_paired_bs():
    out = _run({"model": {"fr": MODEL}, "weak": {"fr": WEAK}, "close": {"fr": CLOSE}}, {"fr": REFS})
    _, expected = PairedTest([("model", MODEL), ("weak", WEAK), ("close", CLOSE)], {"BLEU": BLEU()}, [REFS],
                             test_type="bs", n_samples=1000)()
    for name, result in zip(["model", "weak", "close"], expected["BLEU"]):
        ci = out[name]["bleu_ci"]["fr"]
        assert ci["mean"] == pytest.approx(result.mean, abs=1e-9) and ci["ci"] == pytest.approx(result.ci, abs=1e-9)
        assert (ci["low"], ci["high"]) == pytest.approx((result.mean - result.ci, result.mean + result.ci))
        if name != "model":
            assert out[name]["p_value"]["fr"] == pytest.approx(result.p_value, abs=1e-12)
    assert "p_value" not in out["model"]
    # a clearly weaker system is significant at 5%, a near-copy is not
    assert out["weak"]["p_value"]["fr"] < 0.05 < out["close"]["p_value"]["fr"]


def test_avg_resamples_each_language_and_reduces_to_it():
    refs = {"fr": REFS, "de": DE_REFS}
    out = _run({"model": {"fr": MODEL, "de": DE_MODEL}, "weak": {"fr": WEAK, "de": DE_WEAK},
                "fr_only": {"fr": CLOSE}}, refs)
    alone = _run({"model": {"de": DE_MODEL}, "weak": {"de": DE_WEAK}}, {"de": DE_REFS})
    assert out["model"]["bleu_ci"]["de"] == alone["model"]["bleu_ci"]["de"]  # per language: unchanged by others
    assert alone["model"]["avg_ci"] == alone["model"]["bleu_ci"]["de"]  # one language: Avg is that language
    # the mean of per-resample averages is the average of per-language means
    means = [out["model"]["bleu_ci"][lang]["mean"] for lang in refs]
    assert out["model"]["avg_ci"]["mean"] == pytest.approx(np.mean(means))
    # averaging two languages' independent resamples narrows the interval below the wider one's
    assert out["model"]["avg_ci"]["ci"] < max(out["model"]["bleu_ci"][lang]["ci"] for lang in refs)
    # a system covering fewer languages is compared on what it covers
    assert set(out["fr_only"]["p_value"]) == {"fr", "Avg"}
    assert out["fr_only"]["p_value"]["Avg"] == out["fr_only"]["p_value"]["fr"]
