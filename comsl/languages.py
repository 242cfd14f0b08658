"""CoVoST 2 X→En languages: file-name codes, model language codes and the paper's groups.

One map for the whole package, so data preparation, tokenisation and evaluation agree.
"""

from __future__ import annotations

# CoVoST 2 / Common Voice code (as used in file names) -> mBART-50-style language code.
# ca_ES and cy_GB are not in mBART-50; comsl adds them as new language tokens.
COVOST_TO_MODEL: dict[str, str] = {
    "fr": "fr_XX", "de": "de_DE", "es": "es_XX", "ca": "ca_ES",
    "fa": "fa_IR", "it": "it_IT", "ru": "ru_RU", "pt": "pt_XX", "zh-CN": "zh_CN",
    "tr": "tr_TR", "ar": "ar_AR", "et": "et_EE", "mn": "mn_MN", "nl": "nl_XX",
    "sv-SE": "sv_SE", "lv": "lv_LV", "sl": "sl_SI", "ta": "ta_IN", "ja": "ja_XX",
    "id": "id_ID", "cy": "cy_GB",
}
TARGET_LANG = "en"
TARGET_CODE = "en_XX"

# Codes mBART-50 lacks: added to the tokenizer as special tokens (embeddings resized).
EXTRA_MODEL_CODES: tuple[str, ...] = ("ca_ES", "cy_GB")


def base_code(lang: str) -> str:
    """The language without its region or script, lower-case: ``zh-CN`` / ``zh_CN`` / ``ja_XX`` / ``sv-SE``
    -> ``zh`` / ``zh`` / ``ja`` / ``sv``; a bare code is returned lower-cased (``fr``, ``cy``). This is
    Whisper's language code and M2M100's, and what picks sacreBLEU's tokenizer."""
    return lang.replace("_", "-").split("-")[0].lower()


# NLLB / M2M100 use different code schemes; the text-model wrapper maps through these.
MODEL_TO_NLLB: dict[str, str] = {
    "fr_XX": "fra_Latn", "de_DE": "deu_Latn", "es_XX": "spa_Latn", "ca_ES": "cat_Latn",
    "fa_IR": "pes_Arab", "it_IT": "ita_Latn", "ru_RU": "rus_Cyrl", "pt_XX": "por_Latn",
    "zh_CN": "zho_Hans", "tr_TR": "tur_Latn", "ar_AR": "arb_Arab", "et_EE": "est_Latn",
    "mn_MN": "khk_Cyrl", "nl_XX": "nld_Latn", "sv_SE": "swe_Latn", "lv_LV": "lvs_Latn",
    "sl_SI": "slv_Latn", "ta_IN": "tam_Taml", "ja_XX": "jpn_Jpan", "id_ID": "ind_Latn",
    "cy_GB": "cym_Latn", "en_XX": "eng_Latn",
}
MODEL_TO_M2M100: dict[str, str] = {code: f"__{base_code(code)}__" for code in MODEL_TO_NLLB}

# The paper's resource groups (Table 1).
GROUPS: dict[str, tuple[str, ...]] = {
    "High": ("fr", "de", "es", "ca"),
    "Med": ("fa", "it", "ru", "pt", "zh-CN"),
    "Low": ("et", "mn", "nl", "sv-SE", "lv", "sl", "ta", "ja", "id", "cy", "tr", "ar"),
}

ALL_LANGS: tuple[str, ...] = tuple(COVOST_TO_MODEL)

# Short names people type (zh, sv) -> CoVoST file-name codes.
_ALIASES = {"zh": "zh-CN", "sv": "sv-SE"}


def normalize_lang(lang: str) -> str:
    """Return the CoVoST code for ``lang`` (accepts ``zh``/``sv`` and model codes like ``fr_XX``).

    Raises ValueError naming the language and listing the valid ones.
    """
    if lang in COVOST_TO_MODEL:
        return lang
    if lang in _ALIASES:
        return _ALIASES[lang]
    for covost, code in COVOST_TO_MODEL.items():
        if lang == code:
            return covost
    raise ValueError(
        f"unknown source language {lang!r}; CoVoST 2 X→En languages are: {', '.join(ALL_LANGS)}"
    )


def parse_langs(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Parse ``"fr,de,zh"`` (or a list, or ``"all"``) into CoVoST codes, order kept, no duplicates."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if s.strip()]
    if items == ["all"]:
        return list(ALL_LANGS)
    out: list[str] = []
    for item in items:
        code = normalize_lang(item)
        if code not in out:
            out.append(code)
    return out
