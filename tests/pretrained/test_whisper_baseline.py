import json
import shutil

import numpy as np
import pytest

from comsl.errors import CheckpointError, DataError
from comsl.evaluation.whisper_baseline import whisper_language, whisper_zero_shot
from tests.helpers import transformers_warnings


def test_covost_codes_map_to_whisper_codes():
    assert [whisper_language(c) for c in ("zh-CN", "sv-SE", "fr", "cy", "ca")] == ["zh", "sv", "fr", "cy", "ca"]


def _waves(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(16000 * (0.5 + 0.3 * i))).astype(np.float32) * 0.1 for i in range(n)]


def _noisy_inputs():
    rng = np.random.default_rng(0)
    # loud noise makes this random Whisper say something else, so a misplaced output shows
    waves = [rng.standard_normal(8000 + 800 * i).astype(np.float32) * scale for i, scale in enumerate((5.0, 0.1, 20.0))]
    return {"fr": waves[:2], "zh-CN": waves[1:3], "de": waves[2:3]}


def _each_alone(model_dir, inputs, decode_one):
    """Each utterance alone through a freshly loaded Whisper: ``decode_one(model, features, lang, suppress)``
    -> token ids, as text; ``suppress`` is the generation config's list plus the timestamps."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    fe, tok = WhisperFeatureExtractor.from_pretrained(model_dir), WhisperTokenizer.from_pretrained(model_dir)
    gen = model.generation_config
    suppress = sorted(set(gen.suppress_tokens or []) | set(range(gen.no_timestamps_token_id + 1, model.config.vocab_size)))
    with torch.no_grad():
        return {lang: [tok.decode(decode_one(model, fe([w], sampling_rate=16000, return_tensors="pt").input_features,
                                             lang, suppress), skip_special_tokens=True).strip() for w in waves]
                for lang, waves in inputs.items()}


def _one_by_one(model_dir, inputs, beam, max_new_tokens):
    """The reference: each utterance alone through Whisper's own generate, as the baseline decoded before."""
    return _each_alone(model_dir, inputs, lambda model, features, lang, suppress: model.generate(
        features, language=whisper_language(lang), task="translate", num_beams=beam, max_new_tokens=max_new_tokens,
        suppress_tokens=suppress)[0])


def _greedy_by_hand(model_dir, inputs, max_new_tokens):
    """The reference without generate(): Whisper's translate prompt, then argmax step by step over the logits
    with the suppressed tokens (and, at the first step, the generation config's begin-suppressed ones) masked."""
    import torch

    def decode_one(model, features, lang, suppress):
        gen = model.generation_config
        ids = [gen.decoder_start_token_id, gen.lang_to_id[f"<|{whisper_language(lang)}|>"],
               gen.task_to_id["translate"], gen.no_timestamps_token_id]
        for step in range(max_new_tokens):
            logits = model(input_features=features, decoder_input_ids=torch.tensor([ids])).logits[0, -1]
            logits[suppress + (gen.begin_suppress_tokens if step == 0 else [])] = -float("inf")
            ids.append(int(logits.argmax()))
            if ids[-1] == gen.eos_token_id:
                break
        return ids

    return _each_alone(model_dir, inputs, decode_one)


@pytest.fixture(scope="module")
def talkative_hf(tiny_hf, tmp_path_factory):
    """tiny_hf that can emit letters only (no <|endoftext|>, no other special token): a random tiny Whisper
    otherwise emits nothing readable, and empty outputs would make every comparison below vacuous."""
    out = tmp_path_factory.mktemp("talkative")
    shutil.copytree(tiny_hf, out, dirs_exist_ok=True)
    gen = json.loads((out / "generation_config.json").read_text())
    vocab = json.loads((out / "config.json").read_text())["vocab_size"]
    gen["suppress_tokens"] = sorted(set(gen.get("suppress_tokens") or []) | set(range(27, vocab)))  # 27 letters
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out


@pytest.mark.parametrize("beam", [1, 2])
def test_zero_shot_batched_across_languages_equals_one_by_one(talkative_hf, beam, monkeypatch):
    from transformers import GenerationMixin, WhisperTokenizer

    inputs = _noisy_inputs()
    prompts, real = [], GenerationMixin.generate
    monkeypatch.setattr(GenerationMixin, "generate",
                        lambda self, *a, **kw: prompts.append(kw["decoder_input_ids"].tolist()) or real(self, *a, **kw))
    batched = whisper_zero_shot(talkative_hf, inputs, beam=beam, batch_size=4, max_new_tokens=4)
    sot, fr, zh, de, translate, no_ts = WhisperTokenizer.from_pretrained(talkative_hf).convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|fr|>", "<|zh|>", "<|de|>", "<|translate|>", "<|notimestamps|>"])
    # full batches mixing languages, each utterance with its own language in Whisper's translate prompt
    assert prompts == [[[sot, lang, translate, no_ts] for lang in (fr, fr, zh, zh)], [[sot, de, translate, no_ts]]]
    monkeypatch.setattr(GenerationMixin, "generate", real)
    assert list(batched) == ["fr", "zh-CN", "de"] and [len(v) for v in batched.values()] == [2, 2, 1]
    assert batched == _one_by_one(talkative_hf, inputs, beam, 4)
    # letters and the space only, 4 tokens each, and not all alike
    hyps = [h for v in batched.values() for h in v]
    assert all(set(h) <= set("abcdefghijklmnopqrstuvwxyz ") and 0 < len(h) <= 4 for h in hyps)
    assert batched["fr"][0] != batched["fr"][1] and batched["zh-CN"][0] != batched["zh-CN"][1]


def test_zero_shot_logs_no_transformers_warning_and_decodes_as_greedy_by_hand(talkative_hf):
    inputs = _noisy_inputs()
    with transformers_warnings() as caught:
        hyps = whisper_zero_shot(talkative_hf, inputs, beam=1, batch_size=2, max_new_tokens=4)
    assert caught == []
    assert hyps == _greedy_by_hand(talkative_hf, inputs, 4)
    assert all(hyps.values()) and all(0 < len(h) <= 4 for v in hyps.values() for h in v)  # not vacuous


def test_zero_shot_in_bf16_runs_weights_and_features_in_bf16(talkative_hf, monkeypatch):
    import torch
    from transformers import GenerationMixin

    seen, real = [], GenerationMixin.generate
    monkeypatch.setattr(GenerationMixin, "generate", lambda self, features, **kw: seen.append(
        (next(self.parameters()).dtype, features.dtype)) or real(self, features, **kw))
    hyps = whisper_zero_shot(talkative_hf, _noisy_inputs(), beam=1, batch_size=8, max_new_tokens=4,
                             dtype=torch.bfloat16)
    assert seen == [(torch.bfloat16, torch.bfloat16)]
    assert [len(v) for v in hyps.values()] == [2, 2, 1] and all(0 < len(h) <= 4 for v in hyps.values() for h in v)


def test_bad_inputs_are_named(tiny_hf, tmp_path):
    with pytest.raises(DataError, match="language 'ja' \\(Whisper code 'ja'\\) is not one of"):
        whisper_zero_shot(tiny_hf, {"ja": _waves(1, 0)})
    with pytest.raises(DataError, match="fr utterance #1: .* at most 30 s, got shape \\(480001,\\)"):
        whisper_zero_shot(tiny_hf, {"fr": [np.zeros(100, np.float32), np.zeros(480001, np.float32)]})
    with pytest.raises(DataError, match="de utterance #0: .*got shape \\(2, 100\\)"):
        whisper_zero_shot(tiny_hf, {"de": [np.zeros((2, 100), np.float32)]})
    with pytest.raises(CheckpointError, match="no config.json"):
        whisper_zero_shot(tmp_path, {"fr": _waves(1, 0)})
