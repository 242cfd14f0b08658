"""mBART-50-style tokenizer: load from a local directory, or train one on a corpus's own text.

Sequences are ``[lang_code] tokens... </s>`` (built by ``comsl.data.processor.encode_texts``). ``ca_ES`` and ``cy_GB`` are not
mBART-50 codes; they are added as special tokens so all 21 CoVoST 2 source languages have one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from comsl.errors import DataError
from comsl.languages import (COVOST_TO_MODEL, EXTRA_MODEL_CODES, MODEL_TO_M2M100, MODEL_TO_NLLB, TARGET_CODE,
                             TARGET_LANG, normalize_lang)

# mBART-50's 52 language codes, in its vocabulary order (the tokenizer appends them after the pieces).
MBART50_CODES: tuple[str, ...] = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN", "it_IT",
    "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO", "ru_RU", "si_LK",
    "tr_TR", "vi_VN", "zh_CN", "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE",
    "km_KH", "mk_MK", "ml_IN", "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN",
    "te_IN", "th_TH", "tl_XX", "uk_UA", "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
)
SPM_FILE = "sentencepiece.bpe.model"


def _add_extra_codes(tokenizer):
    missing = [c for c in EXTRA_MODEL_CODES if c not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return tokenizer


def load_tokenizer(directory: str | os.PathLike):
    """The tokenizer saved in ``directory``, offline: an MBart50TokenizerFast (tokenizer.json or
    sentencepiece.bpe.model) with ``ca_ES``/``cy_GB`` added when missing, or, when the directory's
    tokenizer_config.json names an NLLB or M2M100 tokenizer, that one (it has codes for all 21
    languages). Raises DataError when the directory holds no tokenizer.
    """
    from transformers import AutoTokenizer, MBart50TokenizerFast

    directory = os.fspath(directory)
    if not any(os.path.isfile(os.path.join(directory, f)) for f in ("tokenizer.json", SPM_FILE)):
        raise DataError(
            f"{directory}: no tokenizer here (expected tokenizer.json or {SPM_FILE}); "
            "point to a model directory or build one with comsl.data.tokenizer.train_tokenizer"
        )
    config_path = os.path.join(directory, "tokenizer_config.json")
    tokenizer_class = ""
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            tokenizer_class = str(json.load(f).get("tokenizer_class", ""))
    try:
        if "Nllb" in tokenizer_class or "M2M100" in tokenizer_class:
            return AutoTokenizer.from_pretrained(directory)
        tokenizer = MBart50TokenizerFast.from_pretrained(directory)
    except (OSError, ValueError) as err:
        raise DataError(f"{directory}: cannot load the tokenizer ({err})") from err
    return _add_extra_codes(tokenizer)


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 4000, *,
                    character_coverage: float = 1.0):
    """Train a sentencepiece unigram model on ``texts`` and save an mBART-50-style tokenizer in ``out_dir``.

    The saved directory holds sentencepiece.bpe.model and tokenizer.json; its vocabulary is
    ``<s> <pad> </s> <unk>``, the pieces, the 52 mBART-50 codes, ``<mask>``, ``ca_ES``, ``cy_GB``.
    ``vocab_size`` counts sentencepiece pieces and is an upper bound (small corpora get fewer).
    Deterministic for the same texts. Returns the loaded tokenizer.
    """
    import sentencepiece as spm

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lines = [" ".join(t.split()) for t in texts]
    lines = [t for t in lines if t]
    if not lines:
        raise DataError("train_tokenizer: no non-empty text to train on")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=os.path.join(out_dir, SPM_FILE[: -len(".model")]),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=character_coverage,
        hard_vocab_limit=False,  # a tiny corpus cannot fill a large vocabulary; take what it has
        num_threads=1,  # deterministic piece scores
        minloglevel=2,
    )
    os.remove(os.path.join(out_dir, "sentencepiece.bpe.vocab"))
    tokenizer = load_tokenizer(out_dir)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def lang_id(tokenizer, code: str) -> int:
    """Token id of a language code: a model code (``fr_XX``) or a CoVoST code (``fr``, ``zh-CN``, ``en``).
    NLLB (``fra_Latn``) and M2M100 (``__fr__``) vocabularies are recognised and mapped to.

    Raises DataError when the tokenizer does not know it.
    """
    if code == TARGET_LANG:
        code = TARGET_CODE
    elif code not in MBART50_CODES and code not in EXTRA_MODEL_CODES:
        try:
            code = COVOST_TO_MODEL[normalize_lang(code)]
        except ValueError as err:
            raise DataError(str(err)) from err
    for table in (MODEL_TO_NLLB, MODEL_TO_M2M100):
        if _known(tokenizer, table[TARGET_CODE]):
            code = table[code]
            break
    if not _known(tokenizer, code):
        raise DataError(f"tokenizer has no language code {code!r}; load it with comsl.data.tokenizer.load_tokenizer")
    return int(tokenizer.convert_tokens_to_ids(code))


def _known(tokenizer, token: str) -> bool:
    idx = tokenizer.convert_tokens_to_ids(token)
    return idx is not None and idx != tokenizer.unk_token_id
