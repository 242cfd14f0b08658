"""Published numbers from the ComSL paper (Le et al., NeurIPS 2023, arXiv 2305.14838), Tables 1 and 5.

Copied here so reports can show them without reading anything outside the package.
Keys are CoVoST 2 codes as in ``comsl.languages``.
"""

from __future__ import annotations

# ComSL Large + pseudo data, CoVoST 2 X->En test BLEU per source language.
COMSL_LARGE_BLEU: dict[str, float] = {
    "fr": 38.8, "de": 36.0, "es": 40.4, "ca": 35.3,
    "fa": 22.4, "it": 36.6, "ru": 49.2, "pt": 49.9, "zh-CN": 21.4,
    "tr": 33.6, "ar": 41.4, "et": 19.2, "mn": 2.9, "nl": 39.7, "sv-SE": 43.4,
    "lv": 21.3, "sl": 31.6, "ta": 5.0, "ja": 21.3, "id": 46.6, "cy": 24.5,
}

# Group averages (High / Med / Low / Avg over all 21) of the systems in the paper's Table 1.
PAPER_GROUPS: dict[str, dict[str, float]] = {
    "mSLAM 2B": {"High": 37.8, "Med": 29.6, "Low": 18.5, "Avg": 24.8},
    "Whisper Large fine-tuned": {"High": 37.0, "Med": 33.8, "Low": 25.6, "Avg": 29.7},
    "Whisper Large + mBART-50 cascade": {"High": 37.4, "Med": 34.6, "Low": 26.4, "Avg": 30.5},
    "ComSL Medium + pseudo data": {"High": 37.3, "Med": 35.6, "Low": 26.6, "Avg": 30.8},
    "ComSL Large + pseudo data": {"High": 37.6, "Med": 35.9, "Low": 27.5, "Avg": 31.5},
}

COMSL_LARGE_NAME = "ComSL Large + pseudo data"
COMSL_LARGE_GROUPS: dict[str, float] = PAPER_GROUPS[COMSL_LARGE_NAME]
