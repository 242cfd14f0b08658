import json

import numpy as np
import pytest
import soundfile as sf

from comsl.cli import main
from comsl.data.covost2 import PrepareConfig, prepare_covost2
from comsl.data.manifest import read_manifest
from comsl.errors import DataError


def _clip(path, seconds, sr=48000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)


def _tsv(path, header, rows):
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


@pytest.fixture()
def corpus(tmp_path):
    """fr: one combined TSV with a split column and every kind of bad row; de: per-split files
    without 'sentence' (transcripts from validated.tsv), as in the official release."""
    cv, fr = tmp_path / "cv", tmp_path / "cv" / "fr" / "clips"
    fr.mkdir(parents=True)
    good = {"g1.mp3": ("train", 1.0), "g2.mp3": ("train_covost", 2.0), "g3.mp3": ("dev", 1.5),
            "g4.mp3": ("test", 3.0), "g5.wav": ("train", 0.5)}
    rows = []
    for name, (split, sec) in good.items():
        _clip(fr / name, sec)
        rows.append([name, f'Il a dit "bonjour" {name}', f'He said "hello" {name}', "c1", split])
    (fr / "random.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    _clip(fr / "long.mp3", 12.0)
    _clip(fr / "empty_tr.mp3", 1.0)
    sf.write(fr / "zero.wav", np.zeros(0, np.float32), 16000)
    rows += [
        ["missing.mp3", "absent", "absent", "c2", "train"],
        ["random.mp3", "bruit", "noise", "c2", "train"],
        ["empty_tr.mp3", "phrase", "", "c2", "dev"],
        ["long.mp3", "long", "long", "c2", "test"],
        ["zero.wav", "vide", "empty", "c2", "train"],
        ["g1.mp3", "encore", "again", "c2", "train"],
    ]
    _tsv(tmp_path / "covost_v2.fr_en.tsv", ["path", "sentence", "translation", "client_id", "split"], rows)

    de = cv / "de" / "clips"
    de.mkdir(parents=True)
    validated = []
    for i, split in enumerate(["train", "train", "dev", "test"]):
        _clip(de / f"d{i}.mp3", 1.0 + i / 4)
        validated.append(["c", f"d{i}.mp3", f"Guten Tag {i}", "2", "0"])
    _tsv(cv / "de" / "validated.tsv", ["client_id", "path", "sentence", "up_votes", "down_votes"], validated)
    for split, idx in {"train": [0, 1], "dev": [2], "test": [3]}.items():
        _tsv(tmp_path / f"covost_v2.de_en.{split}.tsv", ["path", "translation", "client_id"],
             [[f"d{i}.mp3", f"Good day {i}", "c"] for i in idx])
    return tmp_path


def test_counts_per_reason_and_valid_rows_kept(corpus):
    out = corpus / "out"
    report = prepare_covost2(PrepareConfig(cv_root=str(corpus / "cv"), covost_root=str(corpus),
                                           out=str(out), num_workers=1))
    assert report["skipped_total"] == {"missing_audio": 1, "decode_error": 1, "empty_translation": 1,
                                       "too_short": 1, "too_long": 1, "duplicate": 1}
    fr = report["languages"]["fr"]
    assert {s: fr[s]["kept"] for s in fr} == {"train": 3, "dev": 1, "test": 1}
    assert fr["train"]["skipped"] == {"missing_audio": 1, "decode_error": 1, "too_short": 1, "duplicate": 1}
    assert {s: c["kept"] for s, c in report["languages"]["de"].items()} == {"train": 2, "dev": 1, "test": 1}
    assert json.loads((out / "prepare_report.json").read_text())["kept"] == {"train": 5, "dev": 2, "test": 2}

    train = read_manifest(str(out / "train.tsv"))
    assert [r["id"] for r in train] == ["fr_g1", "fr_g2", "fr_g5", "de_d0", "de_d1"]
    g2 = train[1]
    assert g2["transcript"] == 'Il a dit "bonjour" g2.mp3' and g2["translation"] == 'He said "hello" g2.mp3'
    assert abs(g2["n_samples"] - 32000) < 1200 and g2["src_lang"] == "fr" and g2["tgt_lang"] == "en"
    assert train[2]["n_samples"] == 8000  # wav at 48 kHz: exact
    assert train[3]["transcript"] == "Guten Tag 0" and train[3]["translation"] == "Good day 0"
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert skipped["random.mp3"] == "decode_error" and skipped["zero.wav"] == "too_short"


def test_malformed_row_names_file_and_line(corpus):
    tsv = corpus / "covost_v2.fr_en.tsv"
    lines = tsv.read_text().splitlines()
    lines.insert(3, "g9.mp3\tune phrase\ta sentence\tc1")  # 4 fields, header has 5
    tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"covost_v2\.fr_en\.tsv:4: expected 5 tab-separated fields .* got 4"):
        prepare_covost2(PrepareConfig(cv_root=str(corpus / "cv"), covost_root=str(corpus), out=str(corpus / "o")))
    tsv.write_text("path\tsentence\tclient_id\tsplit\n")
    with pytest.raises(DataError, match=r"covost_v2\.fr_en\.tsv:1: missing column 'translation'"):
        prepare_covost2(PrepareConfig(cv_root=str(corpus / "cv"), covost_root=str(corpus), out=str(corpus / "o"),
                                      langs=["fr"]))


def test_cli_prints_one_line_error_and_writes_manifests(corpus, capsys):
    assert main(["prepare", "covost2", "--cv-root", str(corpus / "cv"), "--covost-root", str(corpus),
                 "--langs", "de", "--out", str(corpus / "o"), "--workers", "1"]) == 0
    assert len(read_manifest(str(corpus / "o" / "test.tsv"))) == 1
    assert main(["prepare", "covost2", "--cv-root", str(corpus / "cv"), "--covost-root", str(corpus),
                 "--langs", "it", "--out", str(corpus / "o")]) == 2
    assert "no CoVoST 2 TSV for 'it'" in capsys.readouterr().err


def _one_lang(tmp_path, rows, clips):
    """A French corpus whose clips dir holds ``clips`` {relative path: seconds} and whose TSV has ``rows``."""
    fr = tmp_path / "cv" / "fr" / "clips"
    for rel, sec in clips.items():
        (fr / rel).parent.mkdir(parents=True, exist_ok=True)
        _clip(fr / rel, sec)
    _tsv(tmp_path / "covost_v2.fr_en.tsv", ["path", "sentence", "translation", "split"], rows)
    return PrepareConfig(cv_root=str(tmp_path / "cv"), covost_root=str(tmp_path), out=str(tmp_path / "out"),
                         langs=["fr"], num_workers=1)


def test_paths_leaving_the_clips_directory_are_skipped_unopened(tmp_path, monkeypatch):
    _clip(tmp_path / "outside.wav", 1.0)
    cfg = _one_lang(tmp_path, [["../../outside.wav", "a", "a", "train"], [str(tmp_path / "outside.wav"), "b", "b",
                                                                          "train"], ["ok.wav", "c", "c", "train"]],
                    {"ok.wav": 1.0})
    opened = []
    real_info = sf.info
    monkeypatch.setattr(sf, "info", lambda p, *a, **kw: opened.append(p) or real_info(p, *a, **kw))
    report = prepare_covost2(cfg)
    assert report["skipped_total"] == {"outside_clips": 2}
    assert [e["id"] for e in read_manifest(tmp_path / "out" / "train.tsv")] == ["fr_ok"]
    assert not any("outside" in str(p) for p in opened)


def test_truncated_mp3_is_skipped(tmp_path):
    cfg = _one_lang(tmp_path, [["cut.mp3", "a", "a", "train"], ["whole.mp3", "b", "b", "train"]],
                    {"cut.mp3": 3.0, "whole.mp3": 3.0})
    cut = tmp_path / "cv" / "fr" / "clips" / "cut.mp3"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    report = prepare_covost2(cfg)
    assert report["skipped_total"] == {"truncated": 1}
    assert [s["path"] for s in report["skipped"]] == ["cut.mp3"]
    assert [e["id"] for e in read_manifest(tmp_path / "out" / "train.tsv")] == ["fr_whole"]


def test_clips_in_subdirectories_keep_distinct_ids(tmp_path):
    cfg = _one_lang(tmp_path, [["sub/x.wav", "a", "a", "train"], ["x.wav", "b", "b", "train"]],
                    {"sub/x.wav": 1.0, "x.wav": 1.0})
    prepare_covost2(cfg)
    ids = [e["id"] for e in read_manifest(tmp_path / "out" / "train.tsv")]
    assert len(set(ids)) == 2 and "fr_x" in ids


def test_relative_manifest_audio_paths_are_relative_to_the_manifest(tmp_path, monkeypatch):
    from comsl.data.manifest import write_manifest

    (tmp_path / "data" / "clips").mkdir(parents=True)
    write_manifest(tmp_path / "data" / "train.tsv", [dict(id="u", audio="clips/u.wav", n_samples=1, duration=1.0,
                                                         src_lang="fr", tgt_lang="en", transcript="a",
                                                         translation="a")])
    monkeypatch.chdir(tmp_path)
    assert read_manifest("data/train.tsv")[0]["audio"] == str(tmp_path / "data" / "clips" / "u.wav")


def _outputs(out):
    files = {name: (out / name).read_text() for name in ("train.tsv", "dev.tsv", "test.tsv")}
    return files, json.loads((out / "prepare_report.json").read_text())


def test_one_and_two_worker_processes_give_identical_results(corpus):
    results = []
    for workers in (1, 2):
        prepare_covost2(PrepareConfig(cv_root=str(corpus / "cv"), covost_root=str(corpus),
                                      out=str(corpus / f"out{workers}"), num_workers=workers))
        results.append(_outputs(corpus / f"out{workers}"))
    assert results[0] == results[1]
    assert results[0][1]["complete"] and results[0][1]["kept"] == {"train": 5, "dev": 2, "test": 2}


def test_interrupted_run_resumes_without_redoing_finished_languages(corpus, monkeypatch):
    import comsl.data.covost2 as covost2

    probed: list[str] = []
    real_probe, real_read = covost2.probe_clip, covost2.read_covost_rows
    failures = {"de": 1}

    def probe(path, full_decode=True):
        probed.append(path)
        return real_probe(path, full_decode)

    def read_rows(covost_root, cv_root, lang):
        if failures.get(lang):
            failures[lang] -= 1
            raise OSError(f"simulated interruption while reading {lang}")
        return real_read(covost_root, cv_root, lang)

    monkeypatch.setattr(covost2, "probe_clip", probe)
    monkeypatch.setattr(covost2, "read_covost_rows", read_rows)
    cfg = PrepareConfig(cv_root=str(corpus / "cv"), covost_root=str(corpus), out=str(corpus / "out"),
                        langs=["fr", "de"], num_workers=1)
    with pytest.raises(OSError, match="simulated interruption"):
        prepare_covost2(cfg)
    partial = json.loads((corpus / "out" / "prepare_report.json").read_text())  # written as it went
    assert not partial["complete"] and partial["pending"] == ["de"] and list(partial["languages"]) == ["fr"]
    assert partial["kept"] == {"train": 3, "dev": 1, "test": 1}
    fr_probes = len(probed)
    assert fr_probes and all("/fr/" in p for p in probed)

    probed.clear()
    prepare_covost2(cfg)  # the rerun: fr comes from the saved progress, only de is decoded
    assert probed and all("/de/" in p for p in probed)

    probed.clear()
    prepare_covost2(PrepareConfig(cv_root=str(corpus / "cv"), covost_root=str(corpus), out=str(corpus / "fresh"),
                                  langs=["fr", "de"], num_workers=1))
    assert _outputs(corpus / "out") == _outputs(corpus / "fresh")  # same as an uninterrupted run
    assert len(probed) == fr_probes + 4

    probed.clear()  # other settings: the saved languages do not apply and are redone
    prepare_covost2(PrepareConfig(cv_root=str(corpus / "cv"), covost_root=str(corpus), out=str(corpus / "out"),
                                  langs=["fr", "de"], num_workers=1, max_seconds=2.5))
    assert len(probed) == fr_probes + 4
