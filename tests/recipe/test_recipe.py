"""The CoVoST 2 recipe (examples/covost2/run.sh) end to end on a very small mini corpus: two languages,
the tiny speech encoder, Django's catalogs only (offline), a few steps per stage. Checks the report, both
stages' metrics (stage 2 with every part of the ComSL objective), that a stopped training stage resumes
where it stopped, and that rerunning a finished recipe is a no-op."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "examples" / "covost2" / "run.sh"
LANGS = ["de", "es"]


def run_recipe(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["bash", str(RUN), "--out", str(out), "--speech-init", "tiny", "--langs", ",".join(LANGS),
           "--per-lang", "40", "--dev-per-lang", "4", "--test-per-lang", "6", "--no-debian", "--max-seconds", "11", "--beam", "2", "--max-new-tokens", "12",
           "--mt", "train.max_steps=8", "--mt", "train.eval_every=4", "--mt", "train.save_every=4",
           "--comsl", "train.max_steps=6", "--comsl", "train.eval_every=3", "--comsl", "train.save_every=3",
           "--comsl", "data.train_sample_utterances=2", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """Runs the recipe three times: up to a stage-2 stop after 3 steps, then on to the end, then again."""
    out = tmp_path_factory.mktemp("recipe") / "exp"
    stopped = run_recipe(out, "--comsl", "train.stop_after=3")
    finished = run_recipe(out)
    report_mtime = (out / "eval" / "report.json").stat().st_mtime_ns
    again = run_recipe(out)
    return out, stopped, finished, again, report_mtime


def test_report_has_every_language_groups_signature_and_baselines(recipe):
    out, _, finished, _, _ = recipe
    report = json.loads((out / "eval" / "report.json").read_text())
    assert sorted(report["bleu"]) == LANGS
    assert all(isinstance(report["bleu"][lang], float) for lang in LANGS)
    # de and es are both in the paper's High group
    assert report["groups"]["High"] == pytest.approx(sum(report["bleu"].values()) / len(LANGS), abs=1e-6)
    assert report["groups"]["Avg"] == pytest.approx(report["groups"]["High"])
    assert report["groups"]["Med"] is None and report["groups"]["Low"] is None
    assert report["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert report["num_sentences"] == {lang: 6 for lang in LANGS}  # --test-per-lang, every clip kept
    constant = report["baselines"]["constant"]
    assert sorted(constant["bleu"]) == LANGS and set(constant["sentence"]) == set(LANGS)
    assert constant["groups"]["Avg"] is not None
    assert report["beam"] == 2 and report["max_new_tokens"] == 12
    for name in ("report.md", "bleu_per_language.png", "table.txt"):
        assert (out / "eval" / name).is_file(), name
    for lang in LANGS:
        assert (out / "eval" / "hypotheses" / f"{lang}.txt").is_file()
    # the summary names the table and where everything is
    assert "report:" in finished.stdout and "model:" in finished.stdout
    assert all(lang in finished.stdout for lang in LANGS)
    assert (out / "comsl" / "final" / "config.json").is_file()


def test_both_stages_log_losses_and_dev_bleu(recipe):
    out = recipe[0]
    mt = metrics(out / "mt" / "metrics.jsonl")
    assert [r["step"] for r in mt if "dev/bleu_avg" in r] == [4, 8]
    assert all("loss/mt" in r for r in mt if "loss/total" in r)
    comsl = metrics(out / "comsl" / "metrics.jsonl")
    dev_steps = [r["step"] for r in comsl if "dev/bleu_avg" in r]
    assert dev_steps == [3, 6]
    assert any("train_sample/bleu_avg" in r for r in comsl)
    logged = [r for r in comsl if "loss/total" in r]
    whole_objective = {"loss/asr", "loss/st", "loss/mt", "loss/mtp", "loss/stm_src", "loss/stm_tgt", "loss/erm",
                       "loss/total"}
    assert logged and all(whole_objective <= r.keys() and all(math.isfinite(r[k]) for k in whole_objective)
                          for r in logged)
    for lang in LANGS:
        assert any(f"dev/bleu/{lang}" in r for r in comsl)


def test_stopped_stage_resumes_and_finished_recipe_reruns_as_a_no_op(recipe):
    out, stopped, finished, again, report_mtime = recipe
    assert "rerun the same command to continue" in stopped.stdout
    assert "[run.sh] stage 4" not in stopped.stdout
    assert "[run.sh] stage 1:" not in finished.stdout and "[run.sh] stage 2:" not in finished.stdout  # done before
    assert "resumed from" in finished.stdout + finished.stderr
    assert "[run.sh] stage 3" in finished.stdout and "[run.sh] stage 4" in finished.stdout
    # stage 2 continued at step 3: each step is logged once, none repeated
    steps = [r["step"] for r in metrics(out / "comsl" / "metrics.jsonl") if "dev/bleu_avg" in r]
    assert steps == sorted(set(steps))
    assert "[run.sh] stage" not in again.stdout
    assert (out / "eval" / "report.json").stat().st_mtime_ns == report_mtime
    assert "report:" in again.stdout
    # one line per stage run: name, wall seconds, CPU seconds
    rows = [line.split() for line in (out / "logs" / "stage_seconds.txt").read_text().splitlines()]
    assert {"setup", "data", "mt", "comsl", "eval"} <= {r[0] for r in rows}
    assert all(len(r) == 3 and r[1].isdigit() and r[2].isdigit() for r in rows)
