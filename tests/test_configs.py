"""Every shipped YAML config loads and validates; every backbone swap builds and trains one step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (HubertConfig, HubertModel, M2M100Config, M2M100ForConditionalGeneration, MBartConfig,
                          MBartForConditionalGeneration, Wav2Vec2BertConfig, Wav2Vec2BertModel, Wav2Vec2Config,
                          Wav2Vec2Model, WhisperConfig, WhisperForConditionalGeneration)

from comsl.config import ExperimentConfig, load_config
from comsl.errors import ConfigError
from comsl.models.build import TINY_SPEECH_ARCH, TINY_TEXT_ARCH, build_model
from comsl.objectives import ComSLMultiTaskLoss

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
SWAPS = [p for p in CONFIGS if p.parent.name == "swaps"]


def test_configs_are_shipped():
    names = {p.relative_to(p.parents[1] if p.parent.name == "swaps" else p.parent).as_posix() for p in CONFIGS}
    assert {"comsl_medium.yaml", "comsl_large.yaml", "mbart_finetune.yaml", "mini.yaml"} <= names
    assert {"swaps/xlsr_mbart50.yaml", "swaps/whisper_nllb.yaml", "swaps/w2vbert_mbart50.yaml",
            "swaps/adapter_only.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)


def test_paper_hyperparameters_in_medium():
    cfg = load_config(CONFIGS[[p.name for p in CONFIGS].index("comsl_medium.yaml")])
    o = cfg.objectives
    assert (o.w_asr, o.w_st, o.w_mt, o.w_cml, o.lambda_st, o.lambda_mt, o.w_erm, o.erm_layer) == \
        (0.35, 0.35, 0.2, 0.1, 0.8, 0.2, 0.1, 4)
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay, cfg.optim.power) == (2e-5, [0.9, 0.98], 0.1, 2.0)
    assert cfg.train.engine == "deepspeed" and cfg.train.precision == "bf16" and cfg.model.activation_checkpointing
    assert len(cfg.data.langs) == 21


def test_misspelled_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train_manifest: x.tsv\noptim:\n  learning_rate: 1.0e-4\ntrain:\n  max_step: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert "optim.learning_rate: unknown key" in msg and "train.max_step: unknown key (did you mean 'max_steps'?)" in msg


def test_wrong_type_and_override_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  train_manifest: x.tsv\n")
    with pytest.raises(ConfigError, match="optim.lr: expected float, got str"):
        load_config(good, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="train.engine: expected one of 'torch' \\| 'deepspeed', got 'jax'"):
        load_config(good, ["train.engine=jax"])
    assert load_config(good, ["optim.lr=3e-4", "data.langs=[fr,de]"]).optim.lr == 3e-4


BAD_VALUES = {
    "optim.eps=0": "optim.eps: must be finite and > 0",
    "optim.lr=.nan": "optim.lr: must be finite and > 0, got nan",
    "optim.lr=.inf": "optim.lr: must be finite and > 0, got inf",
    "optim.betas=[0.9,1.0]": "optim.betas[1]: must be in [0, 1)",
    "optim.warmup_steps=-1": "optim.warmup_steps: must be >= 0, got -1",
    "optim.max_grad_norm=.nan": "optim.max_grad_norm: must be finite and >= 0",
    "objectives.w_st=.nan": "objectives.w_st: must be >= 0, got nan",
    "train.log_every=0": "train.log_every: must be >= 1, got 0",
    "train.save_every=0": "train.save_every: must be >= 1, got 0",
    "train.eval_every=-5": "train.eval_every: must be >= 0 (0 = only at the end), got -5",
    "train.keep_last=0": "train.keep_last: must be >= 1, got 0",
    "train.stop_after=-1": "train.stop_after: must be >= 0",
    "data.max_tokens_per_batch=0": "data.max_tokens_per_batch: must be >= 1, got 0",
    "data.max_frames_per_batch=-3": "data.max_frames_per_batch: must be >= 1, got -3",
    "data.num_workers=-1": "data.num_workers: must be >= 0",
    "model.text_dropout=1.0": "model.text_dropout: must be in [0, 1)",
    "train.init_from=RUN/final": "train.init_from: RUN/final lies inside train.out_dir (RUN)",
    "train.teacher=RUN": "train.teacher: RUN lies inside train.out_dir (RUN)",
}


@pytest.mark.parametrize("override", sorted(BAD_VALUES))
def test_values_out_of_range_are_refused_by_key(tmp_path, override):
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  train_manifest: x.tsv\n")
    run = str(tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        load_config(good, [override.replace("RUN", run), f"train.out_dir={run}"])
    assert BAD_VALUES[override].replace("RUN", run) in str(err.value)


def test_extra_mt_text_keys_are_checked_by_name(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  train_manifest: x.tsv\n")
    text = ["data.mt_manifest=text_train.tsv"]
    cfg = load_config(good, [*text, "data.mt_tokens_per_batch=512"])
    assert (cfg.data.mt_manifest, cfg.data.mt_tokens_per_batch) == ("text_train.tsv", 512)
    with pytest.raises(ConfigError, match="data.mt_tokens_per_batch: must be >= 1 with data.mt_manifest set, got 0"):
        load_config(good, [*text, "data.mt_tokens_per_batch=0"])
    assert load_config(good, ["data.mt_tokens_per_batch=0"]).data.mt_manifest is None  # unused without the text
    with pytest.raises(ConfigError, match="data.mt_manifest: only for train.stage=comsl; stage 1 .* trains on "
                                          "data.train_manifest itself"):
        load_config(good, [*text, "train.stage=mt"])
    with pytest.raises(ConfigError, match="data.mt_tokens_per_batch: expected int"):
        load_config(good, [*text, "data.mt_tokens_per_batch=many"])


def test_a_stage_reading_another_run_dir_is_accepted(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  train_manifest: x.tsv\n")
    cfg = load_config(good, [f"train.out_dir={tmp_path}/stage2", f"train.init_from={tmp_path}/stage1/final",
                             f"train.teacher={tmp_path}/stage1"])
    assert cfg.train.teacher == f"{tmp_path}/stage1"


# ------------------------------------------------------------------ swaps on tiny stand-in weights

SPEECH_STANDINS = {"whisper": (WhisperConfig, WhisperForConditionalGeneration), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
                   "hubert": (HubertConfig, HubertModel), "w2v_bert": (Wav2Vec2BertConfig, Wav2Vec2BertModel)}
TEXT_STANDINS = {"mbart": (MBartConfig, MBartForConditionalGeneration),
                 "nllb": (M2M100Config, M2M100ForConditionalGeneration),
                 "m2m100": (M2M100Config, M2M100ForConditionalGeneration)}


def _speech_input(kind):
    if kind == "whisper":
        return torch.randn(2, 80, 150), torch.ones(2, 150, dtype=torch.long)
    if kind == "w2v_bert":
        return torch.randn(2, 60, 160), torch.ones(2, 60, dtype=torch.long)
    return torch.randn(2, 16000), torch.ones(2, 16000, dtype=torch.long)


@pytest.mark.parametrize("path", SWAPS, ids=lambda p: p.stem)
def test_swap_builds_with_standin_weights_and_trains_one_step(path, tmp_path, tokenizer):
    from comsl.data.batching import pad_ids
    from comsl.data.processor import encode

    cfg = load_config(path)
    kind, family = cfg.model.speech_encoder, cfg.model.text_model
    torch.manual_seed(0)
    s_cfg, s_cls = SPEECH_STANDINS[kind]
    s_cls(s_cfg(**TINY_SPEECH_ARCH[kind])).save_pretrained(tmp_path / "speech")
    t_cfg, t_cls = TEXT_STANDINS[family]
    t_cls(t_cfg(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                **TINY_TEXT_ARCH)).save_pretrained(tmp_path / "text")
    cfg.model.speech_pretrained, cfg.model.text_pretrained = str(tmp_path / "speech"), str(tmp_path / "text")
    cfg.model.activation_checkpointing = False
    model = build_model(cfg.model, tokenizer).train()
    for part, flag in (("speech_encoder", cfg.train.speech_trainable), ("text_encoder", cfg.train.text_encoder_trainable),
                       ("text_decoder", cfg.train.text_decoder_trainable)):
        model.set_trainable(part, flag)
    objectives = cfg.objectives
    objectives.lambda_mt = 0.0  # no stage-1 teacher in this test
    loss = ComSLMultiTaskLoss(objectives, mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    tr, tr_mask = pad_ids([encode(tokenizer, "le chat", "fr"), encode(tokenizer, "der Hund schläft", "de")],
                          tokenizer.pad_token_id)
    tg, tg_mask = pad_ids([encode(tokenizer, "the cat", "en"), encode(tokenizer, "the dog sleeps", "en")],
                          tokenizer.pad_token_id)
    speech, mask = _speech_input(kind)
    batch = dict(speech=speech, speech_mask=mask, src_lang_ids=tr[:, 0].clone(), transcript_ids=tr,
                 transcript_mask=tr_mask, translation_ids=tg, translation_mask=tg_mask)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    total, parts = loss(model, batch)
    total.backward()
    opt.step()
    assert torch.isfinite(total) and parts
    assert all(not torch.equal(b, p) for b, p in zip(before, params) if p.grad is not None)
    if not cfg.train.speech_trainable:
        assert {model.part_of(n) for n, p in model.named_parameters() if p.requires_grad} == {"adapter"}
