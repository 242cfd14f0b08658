"""Hostile and unlucky input through the ``comsl`` command: each gets one line naming the file, line or
key and what to do, never a Python traceback (issue 17, items 9 and 10)."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from comsl.cli import main

SR = 16000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny exported model (4 s input), its tokenizer, a one-row manifest and a train config."""
    from comsl.config import ModelConfig
    from comsl.data.manifest import write_manifest
    from comsl.data.tokenizer import train_tokenizer
    from comsl.models.build import TINY_SPEECH_ARCH, TINY_TEXT_ARCH, build_model

    root = tmp_path_factory.mktemp("cli")
    tok = train_tokenizer(["le chat est sur le tapis", "the cat is on the mat"] * 8, root / "tok", vocab_size=40)
    torch.manual_seed(0)
    model = build_model(ModelConfig(speech_arch=TINY_SPEECH_ARCH["whisper"], text_arch=TINY_TEXT_ARCH,
                                    max_speech_seconds=4.0), tok, load_weights=False)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    other = train_tokenizer(["ein ganz anderer satz", "a different sentence"] * 8, root / "tok2", vocab_size=48)
    teacher = build_model(ModelConfig(speech_arch=TINY_SPEECH_ARCH["whisper"], text_arch=TINY_TEXT_ARCH), other,
                          load_weights=False)
    teacher.save_pretrained(root / "teacher")
    other.save_pretrained(root / "teacher")
    rng = np.random.default_rng(0)
    for name, seconds in (("ok", 1.0), ("long", 6.0)):
        sf.write(root / f"{name}.wav", (0.1 * rng.standard_normal(int(SR * seconds))).astype(np.float32), SR)
    for n in (1, 10):
        sf.write(root / f"s{n}.wav", np.zeros(n, np.float32), SR)
    (root / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    write_manifest(root / "train.tsv", [dict(id="u0", audio=str(root / "ok.wav"), n_samples=SR, duration=1.0,
                                             src_lang="fr", tgt_lang="en", transcript="le chat",
                                             translation="the cat")])
    arch = lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"  # noqa: E731
    (root / "train.yaml").write_text(
        f"model:\n  speech_arch: {arch(TINY_SPEECH_ARCH['whisper'])}\n  text_arch: {arch(TINY_TEXT_ARCH)}\n"
        f"  tokenizer: {root / 'tok'}\ndata:\n  train_manifest: {root / 'train.tsv'}\n"
        f"train:\n  out_dir: {root / 'run'}\n  max_steps: 1\n  teacher: null\nobjectives:\n  w_mt: 0.0\n")
    (root / "a_file").write_text("not a directory\n")
    return root


def covost(root, tsv_bytes: bytes):
    """A Common Voice + CoVoST layout for French with the given CoVoST TSV bytes."""
    cv, cov = root / "cv", root / "covost"
    (cv / "fr" / "clips").mkdir(parents=True, exist_ok=True)
    cov.mkdir(exist_ok=True)
    sf.write(cv / "fr" / "clips" / "a.wav", (0.1 * np.ones(SR, np.float32)), SR)
    (cov / "covost_v2.fr_en.tsv").write_bytes(tsv_bytes)
    return ["prepare", "covost2", "--cv-root", str(cv), "--covost-root", str(cov), "--langs", "fr",
            "--workers", "1"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *names):
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], (name, err)


TRAIN_CASES = {
    # override -> what the one line names
    "log_every=0": (["train.log_every=0"], ["train.log_every: must be >= 1"]),
    "save_every=0": (["train.save_every=0"], ["train.save_every: must be >= 1"]),
    "eval_every=-5": (["train.eval_every=-5"], ["train.eval_every"]),
    "warmup_steps=-1": (["optim.warmup_steps=-1"], ["optim.warmup_steps"]),
    "max_tokens_per_batch=0": (["data.max_tokens_per_batch=0"], ["data.max_tokens_per_batch"]),
    "langs=[xx]": (["data.langs=[xx]"], ["data.langs[0]", "'xx'"]),
    "langs=[de (unparsable)": (["data.langs=[de"], ["data.langs", "not valid YAML"]),
    "text_arch.d_model=31": (["model.text_arch.d_model=31"], ["model.text_arch", "d_model=31", "not divisible"]),
    "text_arch.d_model=big": (["model.text_arch.d_model=big"], ["model.text_arch.d_model: expected int"]),
    "text_arch typo": (["model.text_arch.d_modell=32"], ["model.text_arch.d_modell", "did you mean 'd_model'"]),
    "speech_arch typo": (["model.speech_arch.encoder_layer=2"], ["model.speech_arch.encoder_layer"]),
    "out_dir is a file": (["train.out_dir=ENV/a_file"], ["a_file"]),
    "teacher of another vocabulary": (["objectives.w_mt=0.2", "train.teacher=ENV/teacher"],
                                      ["train.teacher", "vocabulary of"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_input_errors_are_one_line(env, capsys, case):
    overrides, names = TRAIN_CASES[case]
    code, _, err = run(["train", env / "train.yaml", *[o.replace("ENV", str(env)) for o in overrides]], capsys)
    assert_one_line_error(code, err, *names)


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n"], ids=["list", "scalar"])
def test_yaml_that_is_not_a_mapping_with_an_override(tmp_path, capsys, content):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    code, _, err = run(["train", cfg, "train.max_steps=3"], capsys)
    assert_one_line_error(code, err, cfg, "expected a mapping at the top level")


def test_full_disk_during_a_save_is_one_line(env, capsys, monkeypatch):
    from comsl.training import checkpoint

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "write_json", full)
    code, _, err = run(["train", env / "train.yaml", f"train.out_dir={env / 'full'}"], capsys)
    assert_one_line_error(code, err, "No space left on device", "trainer_state.json")


def test_prepare_non_utf8_and_bom_tsv(tmp_path, capsys):
    header = b"path\tsentence\ttranslation\tsplit\n"
    argv = covost(tmp_path, header + b"a.wav\tle chat\tthe cat\ttrain\n" + b"a.wav\tcaf\xe9\tcoffee\tdev\n")
    code, _, err = run([*argv, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "covost_v2.fr_en.tsv:3", "UTF-8")
    argv = covost(tmp_path, b"\xef\xbb\xbf" + header + b"a.wav\tle chat\tthe cat\ttrain\n")
    code, out, err = run([*argv, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "prepare_report.json").read_text())["kept"]["train"] == 1


def test_prepare_out_is_a_file(tmp_path, capsys):
    argv = covost(tmp_path, b"path\tsentence\ttranslation\tsplit\na.wav\tle chat\tthe cat\ttrain\n")
    (tmp_path / "out_file").write_text("x")
    code, _, err = run([*argv, "--out", tmp_path / "out_file"], capsys)
    assert_one_line_error(code, err, "out_file")


def test_score_bad_arguments(tmp_path, capsys):
    (tmp_path / "ref.txt").write_text("a b\n")
    code, _, err = run(["score", "--hyp", tmp_path, "--ref", tmp_path / "ref.txt"], capsys)
    assert_one_line_error(code, err, tmp_path, "directory")
    code, _, err = run(["score", "--hyp", tmp_path / "ref.txt", "--ref", tmp_path / "ref.txt", "-w", "-3"], capsys)
    assert_one_line_error(code, err, "--width")


@pytest.mark.parametrize("clip", ["s1.wav", "s10.wav"])
def test_translate_of_a_clip_too_short(env, capsys, clip):
    code, out, err = run(["translate", "--checkpoint", env / "model", "--src-lang", "fr", "--beam", "1",
                          "--max-new-tokens", "2", env / clip], capsys)
    assert_one_line_error(code, err, clip, "too short")


def test_translate_says_when_a_clip_is_cut_and_keeps_the_good_files(env, capsys):
    code, out, err = run(["translate", "--checkpoint", env / "model", "--src-lang", "fr", "--beam", "1",
                          "--max-new-tokens", "2", env / "ok.wav", env / "broken.wav", env / "long.wav"], capsys)
    assert code != 0 and "Traceback" not in err
    assert len(out.splitlines()) == 3 and out.splitlines()[1] == ""  # one line per file, in order
    assert "broken.wav" in err and "long.wav" in err and "first 4.0 s" in err


def test_evaluate_on_truncated_weights_or_bad_config(env, capsys, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(env / "model", bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, err = run(["evaluate", "--checkpoint", bad, "--data", env / "train.tsv", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, bad)
    shutil.copy(env / "model" / "model.safetensors", weights)
    (bad / "config.json").write_text(json.dumps({"model_type": "comsl", "architectures": ["ComSLModel"]}))
    code, _, err = run(["evaluate", "--checkpoint", bad, "--data", env / "train.tsv", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, bad)


def test_convert_into_its_own_source_is_refused(tmp_path, capsys):
    src = tmp_path / "ct2"
    src.mkdir()
    (src / "config.json").write_text("{}")
    code, _, err = run(["convert", "ct2-whisper", src, src, "--overwrite"], capsys)
    assert_one_line_error(code, err, src, "is the source directory")
    assert (src / "config.json").read_text() == "{}"
