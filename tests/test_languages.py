import pytest

from comsl.languages import (ALL_LANGS, COVOST_TO_MODEL, GROUPS, MODEL_TO_M2M100, MODEL_TO_NLLB, TARGET_CODE,
                             base_code, normalize_lang, parse_langs)


def test_the_21_covost_languages_each_in_exactly_one_paper_group():
    assert len(ALL_LANGS) == 21
    members = [lang for group in GROUPS.values() for lang in group]
    assert sorted(members) == sorted(ALL_LANGS)
    assert [len(GROUPS[g]) for g in ("High", "Med", "Low")] == [4, 5, 12]  # the paper's Table 1


def test_every_model_code_has_nllb_and_m2m100_codes():
    codes = set(COVOST_TO_MODEL.values()) | {TARGET_CODE}
    assert codes == set(MODEL_TO_NLLB) == set(MODEL_TO_M2M100)
    assert MODEL_TO_M2M100["zh_CN"] == "__zh__" and MODEL_TO_M2M100["en_XX"] == "__en__"
    assert MODEL_TO_M2M100["sv_SE"] == "__sv__"


@pytest.mark.parametrize("code, base", [("zh-CN", "zh"), ("zh_CN", "zh"), ("ja_XX", "ja"), ("sv-SE", "sv"),
                                        ("fr", "fr"), ("cy_GB", "cy"), ("EN", "en")])
def test_base_code(code, base):
    assert base_code(code) == base


def test_normalize_lang_accepts_aliases_and_model_codes():
    assert normalize_lang("zh") == "zh-CN" and normalize_lang("sv") == "sv-SE"
    assert normalize_lang("fr_XX") == "fr" and normalize_lang("cy_GB") == "cy"
    assert normalize_lang("de") == "de"
    with pytest.raises(ValueError, match=r"unknown source language 'xx'.*fr, de"):
        normalize_lang("xx")


def test_parse_langs_keeps_order_drops_duplicates():
    assert parse_langs(" fr, zh ,de_DE,fr,zh-CN") == ["fr", "zh-CN", "de"]
    assert parse_langs(["sv", "sv-SE"]) == ["sv-SE"]
    assert parse_langs("all") == list(ALL_LANGS)
    assert parse_langs("") == []
