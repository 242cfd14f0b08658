"""`comsl train` on a real (tiny) CoVoST-layout corpus: stage 1 then stage 2 with every ComSL part."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from comsl.cli import main
from tests.helpers import transformers_warnings

from .tiny_task import ROOT, TINY, build_corpus
from .tiny_task import corpus_paths as paths

# the paper's weights (whatever the tuned mini config says) plus the seed papers' CTC and matching
ALL_PARTS = ("objectives={w_asr: 0.35, w_st: 0.35, w_mt: 0.2, w_cml: 0.1, w_erm: 0.1, lambda_st: 0.8, "
             "lambda_mt: 0.2, erm_layer: 2, w_ctc: 0.1, w_match: 0.1}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_stages_log_every_named_part(corpus, tmp_path):
    mt = tmp_path / "mt"
    assert main(["train", str(ROOT / "configs/mini_mt_tiny.yaml"), *TINY, *paths(corpus, mt), "train.max_steps=4",
                 "train.eval_every=4", "train.save_every=4"]) == 0
    assert (mt / "final" / "model.safetensors").is_file() and (mt / "final" / "tokenizer.json").is_file()
    steps = [r for r in records(mt) if "loss/total" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and all("loss/mt" in r for r in steps)
    assert any("dev/bleu_avg" in r for r in records(mt))

    st = tmp_path / "comsl"
    assert main(["train", str(ROOT / "configs/mini_tiny.yaml"), *TINY, *paths(corpus, st), "train.max_steps=3",
                 f"train.init_from={mt / 'final'}", f"train.teacher={mt / 'final'}", ALL_PARTS,
                 "train.speech_trainable=true", "train.cache_frozen_speech=false", "train.eval_every=3",
                 "data.train_sample_utterances=2"]) == 0
    logged = [r for r in records(st) if "loss/total" in r]
    assert len(logged) == 3
    names = {"loss/asr", "loss/st", "loss/mt", "loss/mtp", "loss/stm_src", "loss/stm_tgt", "loss/erm", "loss/cml",
             "loss/ctc", "loss/match", "loss/total"}
    for r in logged:
        assert names <= set(r) and all(math.isfinite(r[k]) for k in names), r
    evals = [r for r in records(st) if "dev/bleu_avg" in r]
    assert evals and "train_sample/bleu_avg" in evals[-1] and {"dev/bleu/fr", "dev/bleu/es"} <= set(evals[-1])


def test_stage_two_starts_from_stage_one_language_blocks(corpus, tmp_path):
    import torch

    from comsl.config import load_config
    from comsl.models import ComSLModel
    from comsl.training.task import build_task

    mt = tmp_path / "mt"
    assert main(["train", str(ROOT / "configs/mini_mt_tiny.yaml"), *TINY, *paths(corpus, mt), "train.max_steps=2",
                 "train.eval_every=0"]) == 0
    cfg = load_config(ROOT / "configs/mini_tiny.yaml", [*TINY, *paths(corpus, tmp_path / "st"),
                                                   f"train.init_from={mt / 'final'}", f"train.teacher={mt / 'final'}"])
    task = build_task(cfg)
    stage1 = ComSLModel.from_pretrained(mt / "final").text_model.state_dict()
    for name, value in task.model.text_model.state_dict().items():
        assert torch.equal(value, stage1[name]), name
    assert task.loss_fn.teacher is not None and not any(p.requires_grad for p in task.loss_fn.teacher.parameters())


def test_unknown_language_and_missing_init_are_clear(corpus, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["train", str(ROOT / "configs/mini_mt_tiny.yaml"), *TINY, *paths(corpus, out), "data.langs=[fr,ta]",
                 "train.max_steps=1"]) == 2
    assert "no utterances for data.langs ta" in capsys.readouterr().err
    assert main(["train", str(ROOT / "configs/mini_tiny.yaml"), *TINY, *paths(corpus, out), "train.max_steps=1",
                 f"train.init_from={tmp_path / 'nowhere'}", f"train.teacher={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_train_and_evaluate_print_no_transformers_warning(corpus, tmp_path):
    """What the main job runs on a tiny model: stage 1 and stage 2 with their dev BLEU, then `comsl evaluate`
    (beam search, MT on the transcripts too); transformers logs and warns nothing."""
    mt, st = tmp_path / "mt", tmp_path / "comsl"
    with transformers_warnings() as caught:
        assert main(["train", str(ROOT / "configs/mini_mt_tiny.yaml"), *TINY, *paths(corpus, mt), "train.max_steps=2",
                     "train.eval_every=2", "train.save_every=2"]) == 0
        assert main(["train", str(ROOT / "configs/mini_tiny.yaml"), *TINY, *paths(corpus, st), "train.max_steps=2",
                     f"train.init_from={mt / 'final'}", f"train.teacher={mt / 'final'}", "train.eval_every=2",
                     "train.save_every=2", "data.train_sample_utterances=2"]) == 0
        assert main(["evaluate", "--checkpoint", str(st), "--data", str(corpus / "manifests"), "--beam", "2",
                     "--max-new-tokens", "4", "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    assert caught == []
    assert any("dev/bleu_avg" in r for r in records(mt)) and any("dev/bleu_avg" in r for r in records(st))
    assert (tmp_path / "eval" / "report.json").is_file()


def _text_manifest(corpus: Path, out: Path) -> Path:
    """Text-only pairs (audio ``-``) like the mini recipe's text_train.tsv: new sentences, every language."""
    from comsl.data.manifest import write_manifest

    rows = [{"id": f"text_{lang}_{i}", "audio": "-", "n_samples": 0, "duration": 0.0, "src_lang": lang,
             "tgt_lang": "en", "transcript": f"{word} numéro {i}", "translation": f"{word} number {i} here"}
            for lang, word in (("fr", "phrase"), ("es", "frase"), ("de", "Satz")) for i in range(12)]
    write_manifest(out, rows)
    return out


def test_stage_two_with_extra_mt_text_trains_and_logs_it(corpus, tmp_path, capsys):
    mt = tmp_path / "mt"
    assert main(["train", str(ROOT / "configs/mini_mt_tiny.yaml"), *TINY, *paths(corpus, mt), "train.max_steps=1",
                 "train.eval_every=0"]) == 0
    text = _text_manifest(corpus, tmp_path / "text_train.tsv")
    st = tmp_path / "comsl"
    stage2 = ["train", str(ROOT / "configs/mini_tiny.yaml"), *TINY, *paths(corpus, st), "train.max_steps=2",
              f"train.init_from={mt / 'final'}", f"train.teacher={mt / 'final'}", "train.eval_every=0",
              "data.langs=[fr,es]", "data.mt_tokens_per_batch=64", "data.train_sample_utterances=0"]
    assert main([*stage2, f"data.mt_manifest={tmp_path / 'nowhere.tsv'}"]) == 2
    assert "data.mt_manifest: " in capsys.readouterr().err and not st.exists()
    assert main([*stage2, f"data.mt_manifest={text}"]) == 0
    logged = [r for r in records(st) if "loss/total" in r]
    assert len(logged) == 2
    for r in logged:
        assert all(math.isfinite(r[k]) for k in ("loss/mt", "loss/st", "loss/total")), r
        assert r["pad_ratio/mt_tokens"] >= 1.0 and r["pad_ratio/tokens"] >= 1.0
    state = json.loads(next((st / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    assert (state["mt_epoch"], state["mt_batch_in_epoch"]) == (0, 2)  # one text batch per step

    from comsl.config import load_config
    from comsl.training.task import build_task

    cfg = load_config(stage2[1], [*stage2[2:], f"data.mt_manifest={text}", f"train.out_dir={tmp_path / 'x'}"])
    pairs = build_task(cfg).mt_text.dataset
    assert len(pairs) == 24 and {e["src_lang"] for e in pairs.entries} == {"fr", "es"}  # data.langs: no German
