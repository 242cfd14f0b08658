import shutil

import pytest

from comsl.data.processor import encode
from comsl.data.tokenizer import MBART50_CODES, lang_id, load_tokenizer, train_tokenizer
from comsl.errors import DataError
from comsl.languages import ALL_LANGS

TEXTS = [
    "Enter a valid username.", "Bonjour le monde", "Der Benutzername ist ungültig.",
    "这是一个测试", "テストです", "Introduzca un nombre de usuario válido.",
] * 20


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(TEXTS, out, vocab_size=300)
    return out


def test_trained_tokenizer_has_every_language_code(tok_dir):
    tok = load_tokenizer(tok_dir)
    ids = {lang_id(tok, c) for c in MBART50_CODES + ("ca_ES", "cy_GB")}
    assert len(ids) == 54 and tok.unk_token_id not in ids
    for lang in ALL_LANGS + ("en",):
        lang_id(tok, lang)
    assert (tok.pad_token_id, tok.eos_token_id) == (1, 2)


def test_encode_is_lang_tokens_eos_like_src_lang(tok_dir):
    tok = load_tokenizer(tok_dir)
    ids = encode(tok, "Enter a valid username.", "en_XX")
    tok.src_lang = "en_XX"
    assert ids == tok("Enter a valid username.")["input_ids"]
    assert ids[0] == lang_id(tok, "en") and ids[-1] == tok.eos_token_id
    ca = encode(tok, "Bonjour le monde", "ca")
    assert ca[0] == lang_id(tok, "ca_ES")
    assert tok.decode(ca, skip_special_tokens=True) == "Bonjour le monde"


def test_training_is_deterministic_and_json_only_dir_loads(tok_dir, tmp_path):
    again = train_tokenizer(TEXTS, tmp_path / "again", vocab_size=300)
    assert encode(again, TEXTS[2], "de") == encode(load_tokenizer(tok_dir), TEXTS[2], "de")
    json_only = tmp_path / "json_only"
    json_only.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / name, json_only / name)
    assert encode(load_tokenizer(json_only), TEXTS[3], "zh-CN") == encode(again, TEXTS[3], "zh-CN")


def test_missing_tokenizer_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no tokenizer here"):
        load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="unknown source language 'xx'"):
        lang_id(None, "xx")
