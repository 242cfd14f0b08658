"""`comsl score`: golden parity with sacreBLEU's API and its command line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from comsl.cli import main

HYPS = [
    "The cat sat on the mat.",
    "Hello world!",
    "It is raining today, isn't it?",
    "We will meet at 10:30 in the main hall.",
    "Zürich is a city in Switzerland.",
]
REFS = [
    "The cat is on the mat.",
    "Hello, world!",
    "It's raining today, isn't it?",
    "We'll meet at 10:30 in the main hall.",
    "Zurich is a city in Switzerland.",
]


def _sacrebleu_cli() -> list[str] | None:
    local = Path(sys.executable).parent / "sacrebleu"
    if local.exists():
        return [str(local)]
    found = shutil.which("sacrebleu")
    return [found] if found else None


@pytest.fixture
def files(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    ref.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    return str(hyp), str(ref)


def test_score_json_matches_sacrebleu_api(files, capsys):
    hyp, ref = files
    assert main(["score", "--hyp", hyp, "--ref", ref, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    metric = BLEU()
    expected = metric.corpus_score(HYPS, [REFS])
    assert out["name"] == "BLEU"
    assert out["score"] == round(expected.score, 1) == round(sacrebleu.corpus_bleu(HYPS, [REFS]).score, 1)
    assert out["signature"] == metric.get_signature().format()
    assert out["tok"] == "13a" and out["nrefs"] == "1"
    # Full precision through --width.
    assert main(["score", "--hyp", hyp, "--ref", ref, "--json", "-w", "6"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == float(f"{expected.score:.6f}")


def test_score_text_and_chrf(files, capsys):
    hyp, ref = files
    assert main(["score", "--hyp", hyp, "--ref", ref, "-m", "bleu", "chrf", "wer"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].strip().startswith("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    chrf = CHRF().corpus_score(HYPS, [REFS]).score
    assert lines[1].strip().endswith(f"= {chrf:.1f}")
    assert lines[2].strip().startswith("WER|norm:nfkc+casefold+nopunct|unit:word = ")


@pytest.mark.skipif(_sacrebleu_cli() is None, reason="sacrebleu command not installed")
@pytest.mark.parametrize("extra", [["-f", "json"], ["-f", "text"], ["-f", "json", "-m", "bleu", "chrf"],
                                   ["-f", "text", "-m", "bleu", "chrf", "-w", "3"]])
def test_score_output_is_byte_identical_to_sacrebleu_cli(files, capsys, extra):
    hyp, ref = files
    env = dict(os.environ, NO_COLOR="1")
    cli = subprocess.run(_sacrebleu_cli() + [ref, "-i", hyp, "-q"] + extra, capture_output=True, text=True,
                         env=env, check=True).stdout
    ours = ["score", "--hyp", hyp, "--ref", ref]
    if "json" in extra:
        ours.append("--json")
    if "-m" in extra:
        ours += ["-m", "bleu", "chrf"]
    if "-w" in extra:
        ours += ["-w", "3"]
    assert main(ours) == 0
    assert capsys.readouterr().out == cli


def test_score_errors_are_one_line(tmp_path, capsys):
    hyp = tmp_path / "h.txt"
    hyp.write_text("a\nb\n", encoding="utf-8")
    ref = tmp_path / "r.txt"
    ref.write_text("a\n", encoding="utf-8")
    assert main(["score", "--hyp", str(hyp), "--ref", str(ref)]) == 2
    err = capsys.readouterr().err
    assert "2 hypotheses but 1 references" in err and len(err.strip().splitlines()) == 1
