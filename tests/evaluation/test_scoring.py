"""comsl/evaluation/scoring.py: sacreBLEU parity, WER, group averages."""

import math

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from comsl.errors import ComSLError, DataError
from comsl.evaluation.paper import COMSL_LARGE_BLEU, PAPER_GROUPS
from comsl.evaluation.scoring import (
    bleu_tokenizer_for, corpus_bleu, corpus_chrf, corpus_wer, group_averages,
    normalize_for_wer, read_lines, score_files, score_languages,
)

HYPS = ["The cat sat on the mat.", "Hello world!", "It is raining today, isn't it?"]
REFS = ["The cat is on the mat.", "Hello, world!", "It's raining today, isn't it?"]


def test_corpus_bleu_equals_sacrebleu_api():
    res = corpus_bleu(HYPS, REFS)
    metric = BLEU()
    expected = metric.corpus_score(HYPS, [REFS])
    assert res.score == expected.score
    assert res.signature == metric.get_signature().format()
    assert res.signature == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert res.score == sacrebleu.corpus_bleu(HYPS, [REFS]).score


def test_corpus_chrf_equals_sacrebleu_api():
    res = corpus_chrf(HYPS, REFS)
    assert res.name == "chrF2"
    assert res.score == CHRF().corpus_score(HYPS, [REFS]).score


def test_tokenizer_choice_by_text_language():
    assert bleu_tokenizer_for("en") == bleu_tokenizer_for(None) == bleu_tokenizer_for("fr") == "13a"
    assert bleu_tokenizer_for("zh-CN") == bleu_tokenizer_for("zh") == bleu_tokenizer_for("zh_CN") == "zh"
    assert bleu_tokenizer_for("ja") == "ja-mecab"
    res = corpus_bleu(["这是一个测试"], ["这是测试"], "zh-CN")
    assert "tok:zh" in res.signature
    assert res.score == BLEU(tokenize="zh").corpus_score(["这是一个测试"], [["这是测试"]]).score


def test_score_files_reads_like_the_cli(tmp_path):
    hyp, ref = tmp_path / "h.txt", tmp_path / "r.txt"
    # Trailing spaces are stripped by the sacrebleu command; a missing final newline is fine.
    hyp.write_text("The cat sat on the mat.  \nHello world!\n", encoding="utf-8")
    ref.write_text("The cat is on the mat.\nHello, world!", encoding="utf-8")
    assert read_lines(hyp) == ["The cat sat on the mat.", "Hello world!"]
    res = score_files(hyp, ref)
    assert res.score == sacrebleu.corpus_bleu(["The cat sat on the mat.", "Hello world!"],
                                              [["The cat is on the mat.", "Hello, world!"]]).score


def test_length_mismatch_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(DataError, match="file not found"):
        score_files(tmp_path / "nope.txt", tmp_path / "nope2.txt")
    with pytest.raises(ComSLError, match="unknown metric"):
        (tmp_path / "a").write_text("x\n")
        score_files(tmp_path / "a", tmp_path / "a", metric="ter")


def test_wer_normalisation_and_value():
    assert normalize_for_wer("Hello, World!  It's") == ["hello", "world", "its"]
    assert normalize_for_wer("你好，世界", "zh-CN") == ["你", "好", "世", "界"]
    assert corpus_wer(["s i t t i n g"], ["k i t t e n"]) == 50.0  # kitten -> sitting: 3 edits, 6 reference words
    assert corpus_wer(["凯特"], ["凯蒂特"], "zh-CN") == pytest.approx(100 / 3)  # characters: one deletion
    # 0 + 1 substitution + 1 deletion over 2 + 4 + 2 reference words
    assert corpus_wer(["Hello, world!", "a b c x", "one"], ["hello world", "a b c d", "one two"]) == 25.0


def test_group_averages_by_hand():
    groups = group_averages({"fr": 10.0, "de": 20.0, "zh": 30.0, "ta": 1.0, "ja": 3.0})
    assert groups == {"High": 15.0, "Med": 30.0, "Low": 2.0, "Avg": 64.0 / 5}
    only_high = group_averages({"es": 7.0})
    assert only_high == {"High": 7.0, "Med": None, "Low": None, "Avg": 7.0}


def test_group_averages_reproduce_the_paper():
    # The paper's ComSL Large group numbers are the means of its per-language numbers.
    groups = group_averages(COMSL_LARGE_BLEU)
    for name, value in PAPER_GROUPS["ComSL Large + pseudo data"].items():
        assert round(groups[name], 1) == value, name
    assert len(COMSL_LARGE_BLEU) == 21


def test_score_languages_st_and_asr():
    st = score_languages({"fr": HYPS, "de": HYPS[:1]}, {"fr": REFS, "de": REFS[:1]})
    assert st.bleu["fr"] == corpus_bleu(HYPS, REFS).score
    assert st.num_sentences == {"fr": 3, "de": 1}
    assert st.wer is None
    assert st.groups["High"] == pytest.approx((st.bleu["fr"] + st.bleu["de"]) / 2)
    assert math.isclose(st.groups["Avg"], st.groups["High"])
    assert st.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a")

    asr = score_languages({"zh-CN": ["你好世界"], "fr": ["bonjour le monde"]},
                          {"zh-CN": ["你好,世界"], "fr": ["Bonjour le monde."]}, task="asr")
    assert asr.wer == {"zh-CN": 0.0, "fr": 0.0}
    assert "zh-CN: nrefs:1|case:mixed|eff:no|tok:zh" in asr.signature
    with pytest.raises(DataError, match="only hypotheses or only references: de"):
        score_languages({"fr": ["a"], "de": ["b"]}, {"fr": ["a"]})
