import pytest

from comsl.data.manifest import MANIFEST_COLUMNS, read_manifest, read_tsv, write_manifest
from comsl.errors import DataError

ROW = {"id": "fr_1", "audio": "/a/1.mp3", "n_samples": 16000, "duration": "1.000", "src_lang": "fr",
       "tgt_lang": "en", "transcript": 'il a dit "oui"', "translation": "he said \"yes\" 'ok'"}


def test_manifest_round_trip_keeps_quotes_as_text(tmp_path):
    path = tmp_path / "m.tsv"
    write_manifest(path, [{**ROW, "extra": "ignored"}])
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "\t".join(MANIFEST_COLUMNS)
    # QUOTE_NONE: quotes are written as they are, never doubled or wrapped
    assert lines[1] == "fr_1\t/a/1.mp3\t16000\t1.000\tfr\ten\til a dit \"oui\"\the said \"yes\" 'ok'"
    assert lines[2:] == [""]
    (back,) = read_manifest(path)
    assert back == {**ROW, "duration": 1.0}


def test_write_manifest_with_other_columns_and_sequence_rows(tmp_path):
    path = tmp_path / "covost.tsv"
    cols = ("path", "sentence", "translation", "client_id", "split")
    write_manifest(path, [["a.mp3", "bonjour", "hello", "c", "train"]], cols)
    assert read_tsv(str(path), cols) == [(2, dict(zip(cols, ["a.mp3", "bonjour", "hello", "c", "train"])))]
    with pytest.raises(ValueError, match="row of 2 fields under a header of 5"):
        write_manifest(path, [["a.mp3", "x"]], cols)


def test_read_manifest_errors_name_file_and_line(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "missing.tsv")
    path = tmp_path / "bad.tsv"
    write_manifest(path, [ROW, {**ROW, "n_samples": "many"}])
    with pytest.raises(DataError, match=r"bad\.tsv:3: bad n_samples/duration"):
        read_manifest(path)
