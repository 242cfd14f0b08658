"""comsl/evaluation/report.py: every output file is written, consistent, and the PNG is a real image."""

import json

import matplotlib.image as mpimg
import pytest

from comsl.evaluation.baselines import constant_baseline, score_baseline
from comsl.evaluation.report import format_table, ordered_langs, print_table, write_report
from comsl.evaluation.scoring import score_files, score_languages

REFS = {
    "de": ["the house is very big .", "i like green tea ."],
    "fr": ["the weather is nice .", "where is the station ?"],
    "ja": ["good morning .", "thank you very much ."],
}
HYPS = {
    "de": ["the house is big .", "i like tea .\n"],  # a stray newline must not break the file
    "fr": ["the weather is nice .", "where is the station ?"],
    "ja": ["good morning .", "thanks a lot ."],
}


@pytest.fixture
def written(tmp_path):
    scores = score_languages(HYPS, REFS)
    const = constant_baseline([s for refs in REFS.values() for s in refs], REFS, progress=False)
    other = score_baseline("whisper_zero_shot", {"fr": ["the weather is nice ."] * 2}, REFS)
    report = write_report(tmp_path, scores, HYPS, REFS, baselines=[const, other],
                          meta={"checkpoint": "/x/export", "beam": 5, "split": "test"})
    return tmp_path, report, scores


def test_report_json_contents(written):
    out, report, scores = written
    on_disk = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["languages"] == ["fr", "de", "ja"]  # paper order: High, then Low
    assert set(on_disk["bleu"]) == set(on_disk["chrf"]) == set(on_disk["num_sentences"]) == set(REFS)
    assert on_disk["bleu"]["fr"] == pytest.approx(100.0)
    assert on_disk["groups"]["High"] == pytest.approx((scores.bleu["fr"] + scores.bleu["de"]) / 2)
    assert on_disk["groups"]["Low"] == scores.bleu["ja"]
    assert on_disk["groups"]["Med"] is None
    assert on_disk["groups"]["Avg"] == pytest.approx(sum(scores.bleu.values()) / 3)
    assert on_disk["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert on_disk["num_sentences"] == {"fr": 2, "de": 2, "ja": 2}
    assert on_disk["beam"] == 5 and on_disk["split"] == "test" and on_disk["checkpoint"] == "/x/export"
    assert set(on_disk["baselines"]) == {"constant", "whisper_zero_shot"}
    assert set(on_disk["baselines"]["constant"]["bleu"]) == set(REFS)
    assert set(on_disk["baselines"]["constant"]["groups"]) == {"High", "Med", "Low", "Avg"}
    assert list(on_disk["baselines"]["whisper_zero_shot"]["bleu"]) == ["fr"]
    assert on_disk["paper"]["bleu"] == {"fr": 38.8, "de": 36.0, "ja": 21.3}
    assert on_disk["paper"]["groups"]["Avg"] == 31.5
    assert "wer" not in on_disk


def test_written_files_rescore_to_the_report(written):
    out, report, _ = written
    for lang in REFS:
        hyp, ref = out / "hypotheses" / f"{lang}.txt", out / "references" / f"{lang}.txt"
        assert len(hyp.read_text(encoding="utf-8").splitlines()) == 2
        assert score_files(hyp, ref).score == report["bleu"][lang]
    assert (out / "baselines" / "whisper_zero_shot" / "fr.txt").is_file()


def test_markdown_and_table(written, capsys):
    out, report, _ = written
    md = (out / "report.md").read_text(encoding="utf-8")
    assert report["signature"] in md
    assert "| fr | High | 2 | 100.0 |" in md
    assert "| **Avg** |" in md and "31.5" in md and "38.8" in md
    print_table(report)
    printed = capsys.readouterr().out
    assert printed.strip() == format_table(report)
    assert "constant" in printed.splitlines()[0] and "paper" in printed.splitlines()[0]
    assert printed.splitlines()[-1] == f"BLEU signature: {report['signature']}"


def test_png_is_a_valid_image(written):
    out, _, _ = written
    png = out / "bleu_per_language.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_asr_report_has_wer(tmp_path):
    refs = {"fr": ["Bonjour le monde.", "Merci beaucoup."]}
    hyps = {"fr": ["bonjour le monde", "merci"]}
    report = write_report(tmp_path, score_languages(hyps, refs, task="asr"), hyps, refs, task="asr")
    assert report["wer"] == {"fr": pytest.approx(100 * 1 / 5)}
    assert report["wer_groups"]["High"] == pytest.approx(20.0)
    assert "WER" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_ordered_langs():
    assert ordered_langs(["ja", "xx", "zh-CN", "fr"]) == ["fr", "zh-CN", "ja", "xx"]


def test_intervals_p_values_and_mt_in_json_markdown_and_table(tmp_path):
    from comsl.evaluation.evaluate import bootstrap_systems
    from comsl.evaluation.significance import bootstrap

    scores = score_languages(HYPS, REFS)
    const = constant_baseline([s for refs in REFS.values() for s in refs], REFS, progress=False)
    mt = score_baseline("mt", REFS, REFS)  # text input translated perfectly
    confidence = bootstrap_systems(scores, HYPS, REFS, [mt, const])
    # the constant baseline is resampled as the sentence it emits for every utterance
    direct = bootstrap({"model": HYPS, "constant": {l: [const.details["sentence"][l]] * 2 for l in REFS}}, REFS,
                       {"model": scores.bleu, "constant": const.scores.bleu}, {l: "13a" for l in REFS}, "model")
    assert confidence["constant"] == direct["constant"]
    report = write_report(tmp_path, scores, HYPS, REFS, baselines=[const], mt=mt, confidence=confidence)
    on_disk = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert on_disk["bleu_ci"] == confidence["model"]["bleu_ci"] and on_disk["avg_ci"] == confidence["model"]["avg_ci"]
    assert on_disk["bleu_ci"]["fr"] == pytest.approx({"mean": 100.0, "ci": 0.0, "low": 100.0, "high": 100.0})  # perfect
    assert on_disk["mt"]["bleu"] == pytest.approx({"fr": 100.0, "de": 100.0, "ja": 100.0})
    assert set(on_disk["mt"]["p_value"]) == set(on_disk["baselines"]["constant"]["p_value"]) == {*REFS, "Avg"}
    assert on_disk["bootstrap"]["n"] == 1000 and on_disk["bootstrap"]["seed"] == 12345
    assert (tmp_path / "mt" / "de.txt").read_text(encoding="utf-8").splitlines() == REFS["de"]

    table = format_table(report)
    assert "95% CI" in table.splitlines()[0] and "MT" in table.splitlines()[0]
    avg = on_disk["avg_ci"]
    avg_row = next(line for line in table.splitlines() if line.startswith("Avg"))
    assert f"[{avg['low']:.1f}, {avg['high']:.1f}]" in avg_row
    p = on_disk["baselines"]["constant"]["p_value"]["Avg"]
    c_avg = on_disk["baselines"]["constant"]["avg_ci"]
    assert avg_row.split()[-1] == "31.5" and f"[{c_avg['low']:.1f}, {c_avg['high']:.1f}] p={p:.3f}" in avg_row
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| fr | High | 2 | 100.0 | [100.0, 100.0] |" in md and "paired-bootstrap" in md


def test_signature_tokenizer_names_what_sacrebleu_accepts():
    from comsl.evaluation.evaluate import signature_tokenizer

    assert signature_tokenizer("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0") == "13a"
    assert signature_tokenizer("nrefs:1|case:mixed|eff:no|tok:ja-mecab-0.996-IPA|smooth:exp|version:2.6.0") == "ja-mecab"
    assert signature_tokenizer("nrefs:1|case:mixed|eff:no|tok:char|smooth:exp|version:2.6.0") == "char"
