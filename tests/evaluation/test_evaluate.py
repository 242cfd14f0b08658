"""End to end: a tiny ComSL model, exported, evaluated and used by `comsl translate` through the CLI.

Skipped only while comsl.models.composite cannot be imported (the model is written in parallel).
"""

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("comsl.models.composite", reason="comsl.models.composite (ComSLModel) not importable yet")

import torch  # noqa: E402

from comsl.cli import main  # noqa: E402

UTTS = [  # (lang, transcript, translation)
    ("fr", "le chat est sur le tapis", "the cat is on the mat"),
    ("fr", "bonjour le monde", "hello world"),
    ("de", "guten morgen", "good morning"),
    ("de", "die katze schläft", "the cat is sleeping"),
    ("ja", "おはよう", "good morning to you"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from comsl.config import ModelConfig
    from comsl.data.manifest import write_manifest
    from comsl.data.tokenizer import train_tokenizer
    from comsl.models.build import TINY_SPEECH_ARCH, TINY_TEXT_ARCH, build_model

    root = tmp_path_factory.mktemp("e2e")
    texts = [t for _, tr, tl in UTTS for t in (tr, tl)]
    tok = train_tokenizer(texts * 4, root / "tok", vocab_size=60)
    torch.manual_seed(0)
    cfg = ModelConfig(speech_arch=TINY_SPEECH_ARCH["whisper"], text_arch=TINY_TEXT_ARCH, max_speech_seconds=4.0)
    model = build_model(cfg, tok, load_weights=False)
    # An untrained model stops at once or emits special tokens; forbidding them makes it emit
    # max_new_tokens text pieces, so determinism is checked on non-empty hypotheses.
    special = sorted(set(tok.all_special_ids) | set(tok.convert_tokens_to_ids(["ca_ES", "cy_GB"])))
    model.text_model.final_logits_bias[..., special] = -1e4
    # Trainer layout: an interrupted newer save (*.tmp) must be ignored.
    for name in ("step_2", "step_4.tmp"):
        model.save_pretrained(root / "run" / "checkpoints" / name / "model")
        tok.save_pretrained(root / "run" / "checkpoints" / name / "model")
    (root / "run" / "checkpoints" / "step_2" / "COMPLETE").write_text("")
    rng = np.random.default_rng(0)
    rows = []
    for i, (lang, tr, tl) in enumerate(UTTS):
        n = int(16000 * (0.6 + 0.4 * i))
        path = root / "audio" / f"u{i}.{'flac' if i % 2 else 'wav'}"
        path.parent.mkdir(exist_ok=True)
        sr = 16000 if i % 2 else 22050  # resampling on load
        sf.write(path, (0.1 * rng.standard_normal(n * sr // 16000)).astype(np.float32), sr)
        rows.append(dict(id=f"u{i}", audio=str(path), n_samples=n, duration=n / 16000, src_lang=lang,
                         tgt_lang="en", transcript=tr, translation=tl))
    (root / "data").mkdir()
    write_manifest(str(root / "data" / "test.tsv"), rows)
    write_manifest(str(root / "data" / "train.tsv"), rows)
    # Hidden size 32: extra threads only contend on a shared 2-core machine (4x slower measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield root
    torch.set_num_threads(threads)


def _evaluate(run_dir, out, *extra):
    return main(["evaluate", "--checkpoint", str(run_dir / "run"), "--data", str(run_dir / "data"),
                 "--beam", "2", "--max-new-tokens", "6", "--batch-seconds", "4", "--no-progress",
                 "--out", str(out), *extra])


def test_evaluate_end_to_end_is_deterministic(run_dir, tmp_path, capsys):
    assert _evaluate(run_dir, tmp_path / "a", "--baselines-from", str(run_dir / "data")) == 0
    printed = capsys.readouterr().out
    # The first run's outputs, scored as a named baseline, equal the model's own scores.
    assert _evaluate(run_dir, tmp_path / "b", "--baseline", f"again={tmp_path / 'a' / 'hypotheses'}") == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text(encoding="utf-8"))
    again = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))

    assert report["checkpoint"] == str(run_dir / "run" / "checkpoints" / "step_2" / "model")
    assert report["languages"] == ["fr", "de", "ja"]
    assert set(report["bleu"]) == set(report["chrf"]) == {"fr", "de", "ja"}
    assert report["num_sentences"] == {"fr": 2, "de": 2, "ja": 1}
    assert set(report["groups"]) == {"High", "Med", "Low", "Avg"} and report["groups"]["Med"] is None
    assert report["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert set(report["baselines"]["constant"]["bleu"]) == {"fr", "de", "ja"}
    assert report["beam"] == 2 and report["split"] == "test"

    for lang in ("fr", "de", "ja"):
        hyp = (tmp_path / "a" / "hypotheses" / f"{lang}.txt").read_text(encoding="utf-8")
        assert hyp == (tmp_path / "b" / "hypotheses" / f"{lang}.txt").read_text(encoding="utf-8")
        assert all(line.strip() for line in hyp.splitlines())  # non-empty outputs
        refs = (tmp_path / "a" / "references" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        assert refs == [tl for l, _, tl in UTTS if l == lang]  # raw reference text
    assert report["bleu"] == again["bleu"] and report["chrf"] == again["chrf"]
    assert again["baselines"]["again"]["bleu"] == report["bleu"]

    png = tmp_path / "a" / "bleu_per_language.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(png).ndim == 3
    assert "BLEU signature: nrefs:1" in printed and "constant" in printed


def test_evaluate_asr_and_language_filter(run_dir, tmp_path, capsys):
    assert _evaluate(run_dir, tmp_path, "--task", "asr", "--langs", "fr,ja") == 0
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["languages"] == ["fr", "ja"] and set(report["wer"]) == {"fr", "ja"}
    assert report["bleu_signatures"]["fr"].split("|")[3] == "tok:13a"
    # ja transcripts: MeCab when installed, else character tokens; the signature says which.
    assert report["bleu_signatures"]["ja"].split("|")[3] in ("tok:ja-mecab", "tok:char")


def test_translate_prints_one_line_per_file(run_dir, capsys):
    files = [str(run_dir / "audio" / "u0.wav"), str(run_dir / "audio" / "u1.flac")]
    args = ["translate", "--checkpoint", str(run_dir / "run"), "--src-lang", "fr", "--beam", "2",
            "--max-new-tokens", "6", *files]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(lines)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_on_cuda_matches_cpu_languages(run_dir, tmp_path):
    assert _evaluate(run_dir, tmp_path, "--device", "cuda") == 0
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["languages"] == ["fr", "de", "ja"]


def test_checkpoint_errors_are_one_line(tmp_path, capsys):
    assert main(["translate", "--checkpoint", str(tmp_path), "--src-lang", "fr", "x.wav"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a ComSL checkpoint" in err and len(err.splitlines()) == 1


def test_dev_evaluator_matches_evaluate(run_dir, tmp_path):
    from comsl.data.tokenizer import load_tokenizer
    from comsl.models.composite import ComSLModel
    from comsl.evaluation.decode import DecodeConfig
    from comsl.evaluation.dev import DevEvaluator

    model_dir = run_dir / "run" / "checkpoints" / "step_2" / "model"
    config = DecodeConfig(beam=2, max_new_tokens=6, batch_seconds=4)
    dev = DevEvaluator.from_manifest(run_dir / "data" / "test.tsv", load_tokenizer(model_dir), config,
                                     langs=["fr", "de"], per_language=1)
    assert [u.id for u in dev.utts] == ["u0", "u2"]
    model = ComSLModel.from_pretrained(str(model_dir))
    model.train()
    result = dev(model)
    assert set(result["bleu"]) == {"fr", "de"} and result["avg"] == pytest.approx(sum(result["bleu"].values()) / 2)
    assert dev(model) == result  # deterministic, and the model is left usable


def test_evaluate_reports_mt_on_the_transcripts(run_dir, tmp_path, monkeypatch):
    from comsl.evaluation.decode import DecodeConfig, Decoder
    from comsl.evaluation.evaluate import evaluate

    calls = []
    real = Decoder.translate_texts

    def recording(self, texts, langs):
        calls.append((list(texts), list(langs)))
        return real(self, texts, langs)

    monkeypatch.setattr(Decoder, "translate_texts", recording)
    cfg = DecodeConfig(beam=2, max_new_tokens=6, batch_seconds=4, device="cpu")
    report = evaluate(run_dir / "run", run_dir / "data", tmp_path / "a", config=cfg, progress=False,
                      print_results=False)
    # the model's text input is the transcript of each test utterance, in its language
    assert calls == [([tr for _, tr, _ in UTTS], [lang for lang, _, _ in UTTS])]
    expected = real(Decoder.from_checkpoint(run_dir / "run", cfg), *calls[0])
    written = [line for lang in ("fr", "de", "ja")  # UTTS are grouped fr, de, ja already
               for line in (tmp_path / "a" / "mt" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()]
    assert written == expected and all(written)
    assert set(report["mt"]["bleu"]) == {"fr", "de", "ja"} and set(report["mt"]["p_value"]) == {"fr", "de", "ja", "Avg"}
    assert set(report["bleu_ci"]) == {"fr", "de", "ja"} and "avg_ci" in report
    assert "mt" not in evaluate(run_dir / "run", run_dir / "data", tmp_path / "b", config=cfg, mt=False,
                                progress=False, print_results=False)
