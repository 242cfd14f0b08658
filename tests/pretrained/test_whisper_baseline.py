import numpy as np
import pytest

from comsl.errors import CheckpointError, DataError
from comsl.evaluation.whisper_baseline import whisper_language, whisper_zero_shot


def test_covost_codes_map_to_whisper_codes():
    assert [whisper_language(c) for c in ("zh-CN", "sv-SE", "fr", "cy", "ca")] == ["zh", "sv", "fr", "cy", "ca"]


def _waves(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(16000 * (0.5 + 0.3 * i))).astype(np.float32) * 0.1 for i in range(n)]


def test_zero_shot_keeps_order_and_does_not_depend_on_batching(tiny_hf):
    inputs = {"fr": _waves(2, 0), "zh-CN": _waves(1, 1)}
    batched = whisper_zero_shot(tiny_hf, inputs, beam=2, batch_size=2, max_new_tokens=4)
    single = whisper_zero_shot(tiny_hf, inputs, beam=2, batch_size=1, max_new_tokens=4)
    assert list(batched) == ["fr", "zh-CN"] and [len(v) for v in batched.values()] == [2, 1]
    assert batched == single
    # the tiny vocabulary holds only letters and the space, at most 4 tokens each
    assert all(set(h) <= set("abcdefghijklmnopqrstuvwxyz ") and len(h) <= 4 for v in batched.values() for h in v)


def test_bad_inputs_are_named(tiny_hf, tmp_path):
    with pytest.raises(DataError, match="language 'ja' \\(Whisper code 'ja'\\) is not one of"):
        whisper_zero_shot(tiny_hf, {"ja": _waves(1, 0)})
    with pytest.raises(DataError, match="fr utterance #1: .* at most 30 s, got shape \\(480001,\\)"):
        whisper_zero_shot(tiny_hf, {"fr": [np.zeros(100, np.float32), np.zeros(480001, np.float32)]})
    with pytest.raises(DataError, match="de utterance #0: .*got shape \\(2, 100\\)"):
        whisper_zero_shot(tiny_hf, {"de": [np.zeros((2, 100), np.float32)]})
    with pytest.raises(CheckpointError, match="no config.json"):
        whisper_zero_shot(tmp_path, {"fr": _waves(1, 0)})
