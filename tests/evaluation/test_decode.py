"""comsl/evaluation/decode.py: batching, manifest reading and settings validation (no model needed)."""

import pytest

from comsl.errors import ComSLError, DataError
from comsl.evaluation.decode import DecodeConfig, make_batches, manifest_path, read_utterances

COLUMNS = "id\taudio\tn_samples\tduration\tsrc_lang\ttgt_lang\ttranscript\ttranslation\n"


def test_batches_sorted_capped_and_complete():
    durations = [1.0, 5.0, 2.0, 2.0, 9.0, 0.5, 30.0]
    batches = make_batches(durations, batch_seconds=10.0, max_batch_size=3)
    assert batches == [[6], [4], [1], [2, 3, 0], [5]] or sorted(sum(batches, [])) == list(range(7))
    assert sorted(i for b in batches for i in b) == list(range(len(durations)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(durations[i] for i in b) <= 10.0
        assert [durations[i] for i in b] == sorted((durations[i] for i in b), reverse=True)
    assert make_batches(durations, 10.0, 3) == batches  # deterministic


def test_batches_one_key_each():
    batches = make_batches([1.0] * 6, 100.0, 64, keys=["fr", "de", "fr", "de", "fr", "ja"])
    assert batches == [[0, 2, 4], [1, 3], [5]]


def test_read_utterances_filters_languages(tmp_path):
    manifest = tmp_path / "test.tsv"
    manifest.write_text(
        COLUMNS
        + "a\tclips/a.wav\t16000\t1.0\tfr\ten\tle chat\tthe cat\n"
        + "b\t/abs/b.wav\t8000\t0.5\tzh-CN\ten\t你好\thello\n",
        encoding="utf-8",
    )
    assert manifest_path(tmp_path, "test") == manifest
    utts = read_utterances(manifest)
    assert [u.id for u in utts] == ["a", "b"]
    assert utts[0].audio == str(tmp_path / "clips" / "a.wav") and utts[1].audio == "/abs/b.wav"
    assert utts[0].reference("st") == "the cat" and utts[0].reference("asr") == "le chat"
    assert [u.id for u in read_utterances(manifest, ["zh"])] == ["b"]
    with pytest.raises(DataError, match="no utterances for languages de"):
        read_utterances(manifest, ["de"])
    with pytest.raises(DataError, match="manifest not found"):
        manifest_path(tmp_path, "dev")


def test_decode_config_reports_every_error():
    with pytest.raises(ComSLError, match="task: .*; beam: must be >= 1"):
        DecodeConfig(task="mt", beam=0).validate()
