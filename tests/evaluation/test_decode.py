"""comsl/evaluation/decode.py: manifest reading and settings validation (no model needed; its batching is
comsl.data.batching.longest_first_batches, tested in tests/data/test_batching.py)."""

import pytest

from comsl.errors import ComSLError, DataError
from comsl.evaluation.decode import DecodeConfig, manifest_path, read_utterances

COLUMNS = "id\taudio\tn_samples\tduration\tsrc_lang\ttgt_lang\ttranscript\ttranslation\n"


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
