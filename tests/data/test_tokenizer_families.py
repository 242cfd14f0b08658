"""Language codes are spelled in the text model's own vocabulary: mBART-50, NLLB or M2M100."""

from __future__ import annotations

import pytest

from comsl.data.tokenizer import lang_id
from comsl.errors import DataError


class VocabOnly:
    """The part of a tokenizer ``lang_id`` uses: token -> id with an unknown id."""

    unk_token_id = 3

    def __init__(self, tokens):
        self.vocab = {t: i + 10 for i, t in enumerate(tokens)}

    def convert_tokens_to_ids(self, token):
        return self.vocab.get(token, self.unk_token_id)


@pytest.mark.parametrize("tokens,covost,expected", [
    (["en_XX", "fr_XX", "ca_ES"], "fr", "fr_XX"),
    (["eng_Latn", "fra_Latn", "cym_Latn", "zho_Hans"], "fr", "fra_Latn"),
    (["eng_Latn", "fra_Latn", "cym_Latn", "zho_Hans"], "zh-CN", "zho_Hans"),
    (["eng_Latn", "fra_Latn", "cym_Latn"], "cy", "cym_Latn"),
    (["__en__", "__fr__", "__sv__"], "sv-SE", "__sv__"),
    (["__en__", "__fr__"], "en", "__en__"),
])
def test_codes_follow_the_vocabulary(tokens, covost, expected):
    tok = VocabOnly(tokens)
    assert lang_id(tok, covost) == tok.vocab[expected]


def test_missing_code_is_a_clear_error():
    with pytest.raises(DataError, match="no language code 'ta_IN'"):
        lang_id(VocabOnly(["en_XX", "fr_XX"]), "ta")
