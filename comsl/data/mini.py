"""The offline mini corpus: real human translations (Django's catalogs) read by espeak-ng, laid out
exactly like Common Voice + CoVoST 2 so ``comsl prepare covost2`` runs on it unchanged.

Text: Django ships, for all 21 CoVoST 2 source languages, translations of its interface strings
(``django/conf/locale`` and ``django/contrib/*/locale``, ``django.po`` and ``djangojs.po``, BSD-3).
English msgid -> msgstr pairs are kept when the English has 2+ words after placeholders are filled
with names and numbers (the same fill for every language, decided by the English string and the
seed) and markup is stripped. Plural entries use the plural forms for the number filled in.

Split: near-duplicate English sentences are clustered (token-set Jaccard, shared long prefixes) and
whole clusters go to one split, decided once for the English sentence, so no dev/test reference is
ever a training target in any language.

Speech: espeak-ng (zh-CN read as tone-numbered pinyin with voice ``cmn-latn-pinyin``, ja from kana);
Mongolian has no espeak-ng voice and is left out. Clips are resampled to 48 kHz and written as mp3.

Layout under ``out``: ``<lang>/clips/*.mp3``, ``<lang>/validated.tsv`` (Common Voice columns),
``covost_v2.<lang>_en.tsv`` (path, sentence, translation, client_id, split), ``mini_report.json`` and,
unless disabled, ``tokenizer/`` (sentencepiece trained on the train split's text).
"""

from __future__ import annotations

import gettext
import glob
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from comsl.data.manifest import write_manifest
from comsl.errors import ConfigError, DataError
from comsl.languages import ALL_LANGS, TARGET_LANG

# CoVoST code -> (Django locale directory, espeak-ng voice). No espeak-ng voice speaks Mongolian.
LANG_SOURCES: dict[str, tuple[str, str | None]] = {
    "fr": ("fr", "fr"), "de": ("de", "de"), "es": ("es", "es"), "ca": ("ca", "ca"), "fa": ("fa", "fa"),
    "it": ("it", "it"), "ru": ("ru", "ru"), "pt": ("pt", "pt"), "zh-CN": ("zh_Hans", "cmn-latn-pinyin"),
    "tr": ("tr", "tr"), "ar": ("ar", "ar"), "et": ("et", "et"), "mn": ("mn", None), "nl": ("nl", "nl"),
    "sv-SE": ("sv", "sv"), "lv": ("lv", "lv"), "sl": ("sl", "sl"), "ta": ("ta", "ta"), "ja": ("ja", "ja"),
    "id": ("id", "id"), "cy": ("cy", "cy"),
}
VOICED_LANGS: tuple[str, ...] = tuple(lang for lang in ALL_LANGS if LANG_SOURCES[lang][1])
SPLITS = ("train", "dev", "test")
CLIP_RATE = 48000  # Common Voice clips are 48 kHz mp3
CLIENT_ID = "espeak-ng"

# Placeholder fillers: proper nouns and numbers carry over unchanged into every translation.
_PEOPLE = ("Maria", "Daniel", "Anna", "Lucas", "Sofia", "David", "Elena", "Omar", "Laura", "Martin")
_PLACES = ("Paris", "Berlin", "Madrid", "Lisbon", "Rome", "Tokyo", "Cairo", "Oslo", "Lima", "Vienna")
_NUMBERS = (2, 3, 4, 5, 7, 8, 10, 12, 20, 50)
_NUMERIC_NAME = re.compile(r"count|num|max|min|limit|size|length|value|digit|place|year|day|month|"
                           r"hour|minute|second|week|total|cost|amount|page|index|version", re.I)
_PERSON_NAME = re.compile(r"user|author|person|owner|^name$|first_name|last_name|full_name", re.I)
_PLACEHOLDER = re.compile(r"%\((?P<name>\w+)\)(?P<f1>[-#0 +]*\d*(?:\.\d+)?[sdifr])|%(?P<f2>[-#0 +]*\d*(?:\.\d+)?[sdifr])"
                          r"|\{(?P<brace>\w*)\}")


@dataclass(kw_only=True)
class MiniConfig:
    """What ``comsl prepare mini`` builds."""

    out: str
    """Output directory (Common Voice root and CoVoST root at once)."""
    langs: list[str] = field(default_factory=lambda: list(VOICED_LANGS))
    """CoVoST source-language codes; ``mn`` is left out (no espeak-ng voice)."""
    per_lang: int = 120
    """Sentences per language at most (languages with fewer translations get all theirs).
    120 x 20 languages = about 2400 clips, 2.4 h: about 155 s of CPU (espeak-ng + mp3 encoding),
    so under 3 minutes on 2 cores even when they are shared."""
    seed: int = 0
    """Seed for placeholder fills, the split and the per-language sample."""
    dev_fraction: float = 0.1
    """Share of unique English sentences (whole clusters) in dev."""
    test_fraction: float = 0.1
    """Share of unique English sentences (whole clusters) in test."""
    espeak_speed: int = 150
    """espeak-ng speed in words per minute (its default is 175; slower is easier to recognise)."""
    espeak_gap: int = 2
    """espeak-ng pause between words, in units of 10 ms."""
    jaccard: float = 0.6
    """English sentences whose word sets overlap at least this much are one cluster."""
    num_workers: int = 2
    """Synthesis processes."""
    tokenizer_vocab: int = 4000
    """Sentencepiece size of ``<out>/tokenizer`` (an upper bound); 0 skips the tokenizer."""
    extra_per_lang: int = 0
    """Extra clips per language listed only in validated.tsv (train-split sentences, like the Common
    Voice clips CoVoST does not use), for pseudo-labelling."""


# --------------------------------------------------------------------------- .po catalogs

@dataclass
class PoEntry:
    """One catalog entry: msgid, optional plural msgid, msgstr forms (index -> text), flags."""

    msgid: str
    msgid_plural: str | None
    msgstr: dict[int, str]
    fuzzy: bool


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise ValueError(f"expected a quoted string, got {s!r}")
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s[1:-1])


def parse_po(path: str) -> tuple[list[PoEntry], str | None]:
    """Parse a gettext .po file: (entries, Plural-Forms header expression or None).

    Handles multi-line strings, msgctxt, plurals, ``#, fuzzy`` flags and obsolete ``#~`` entries
    (skipped). Raises DataError with ``file:line`` on a line it cannot read.
    """
    entries: list[PoEntry] = []
    cur: dict | None = None
    key: str | None = None
    fuzzy = False

    def flush():
        nonlocal cur
        if cur is not None and "msgid" in cur:
            strs = {int(k[7:-1]) if k.startswith("msgstr[") else 0: v for k, v in cur.items()
                    if k.startswith("msgstr")}
            entries.append(PoEntry(cur["msgid"], cur.get("msgid_plural"), strs, cur["fuzzy"]))
        cur = None

    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            try:
                if not line.strip():
                    flush()
                    fuzzy, key = False, None
                elif line.startswith("#~"):
                    continue
                elif line.startswith("#,"):
                    fuzzy = fuzzy or "fuzzy" in line
                elif line.startswith("#"):
                    continue
                elif line.startswith('"'):
                    if cur is None or key is None:
                        raise ValueError("continuation line outside an entry")
                    cur[key] += _unquote(line)
                else:
                    word, _, rest = line.partition(" ")
                    if word == "msgctxt" or (word == "msgid" and cur is not None and "msgid" in cur):
                        flush()
                    if cur is None:
                        cur = {"fuzzy": fuzzy}
                    if not re.fullmatch(r"msgctxt|msgid|msgid_plural|msgstr(\[\d+\])?", word):
                        raise ValueError(f"unknown keyword {word!r}")
                    key = word
                    cur[key] = _unquote(rest)
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: cannot parse .po line ({err})") from err
    flush()
    plural = None
    for e in entries:
        if e.msgid == "":
            m = re.search(r"plural=([^;\n]+)", e.msgstr.get(0, ""))
            plural = m.group(1).strip() if m else None
    return [e for e in entries if e.msgid], plural


def django_catalogs(locale: str) -> list[str]:
    """Paths of Django's django.po/djangojs.po catalogs (core + contrib) for a locale directory name."""
    try:
        import django
    except ImportError as err:
        raise DataError("the mini corpus needs Django's translation catalogs: pip install 'comsl[mini]'") from err
    root = os.path.dirname(django.__file__)
    pattern = os.path.join("locale", locale, "LC_MESSAGES", "django*.po")
    return sorted(glob.glob(os.path.join(root, "conf", pattern)) + glob.glob(os.path.join(root, "contrib", "*", pattern)))


# --------------------------------------------------------------------------- text

def _stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _fill_value(name: str, fmt: str, msgid: str, seed: int, k: int) -> str:
    r = _stable_int(msgid, seed, name, k)
    if fmt in "dif" or _NUMERIC_NAME.search(name):
        return str(_NUMBERS[r % len(_NUMBERS)])
    if _PERSON_NAME.search(name):
        return _PEOPLE[r % len(_PEOPLE)]
    return _PLACES[r % len(_PLACES)]


def placeholder_values(msgid: str, seed: int) -> list[tuple[str, str]]:
    """The (placeholder key, value) fills of an English string; keys are names or positions."""
    out = []
    for k, m in enumerate(_PLACEHOLDER.finditer(msgid)):
        name = m.group("name") or m.group("brace") or ""
        fmt = (m.group("f1") or m.group("f2") or "s")[-1]
        key = name if name else f"#{k}"
        out.append((key, _fill_value(name, fmt, msgid, seed, k)))
    return out


def fill_placeholders(text: str, values: dict[str, str]) -> str | None:
    """Replace placeholders by the English string's fills (named ones by name, positional ones in
    order); None when the text has a placeholder the English does not."""
    k = 0
    missing = False

    def sub(m):
        nonlocal k, missing
        name = m.group("name") or m.group("brace") or ""
        key = name if name else f"#{k}"
        k += 1
        if key not in values:
            missing = True
            return ""
        return values[key]

    text = _PLACEHOLDER.sub(sub, text.replace("%%", "%"))
    return None if missing else text


_TAG = re.compile(r"<[^>]*>")


def clean_markup(text: str) -> str:
    """Strip HTML tags and entities, and collapse whitespace."""
    text = html.unescape(_TAG.sub(" ", text))
    return " ".join(text.replace("\u00a0", " ").split())


def catalog_pairs(lang: str, seed: int) -> dict[str, str]:
    """English sentence -> translation for one language from all its Django catalogs (first wins)."""
    locale = LANG_SOURCES[lang][0]
    pairs: dict[str, str] = {}
    for path in django_catalogs(locale):
        entries, plural_expr = parse_po(path)
        plural = gettext.c2py(plural_expr) if plural_expr else (lambda n: int(n != 1))
        for e in entries:
            if e.fuzzy:
                continue
            values = dict(placeholder_values(e.msgid, seed))
            en_src, tr_src = e.msgid, e.msgstr.get(0, "")
            if e.msgid_plural is not None:
                numbers = [int(v) for v in values.values() if v.isdigit()]
                n = numbers[0] if numbers else 1
                # The fills come from the singular msgid (same placeholder names as the plural), so
                # the number in the English and the plural form picked for the translation agree.
                en_src = e.msgid if n == 1 else e.msgid_plural
                tr_src = e.msgstr.get(int(plural(n)), "")
            if not tr_src.strip():
                continue
            en = fill_placeholders(en_src, values)
            tr = fill_placeholders(tr_src, values)
            if en is None or tr is None:
                continue
            en, tr = clean_markup(en), clean_markup(tr)
            if len(en.split()) < 2 or not re.search(r"[A-Za-z]", en) or not tr or en == tr:
                continue
            if re.search(r"[%{}]", en + tr):
                continue  # an unusual placeholder syntax survived
            pairs.setdefault(en, tr)
    return pairs


# --------------------------------------------------------------------------- split

def _words(s: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", s.lower())


def cluster_sentences(sentences: list[str], jaccard: float = 0.6, prefix_words: int = 4) -> list[list[str]]:
    """Group near-duplicates: word-set Jaccard >= ``jaccard``, or the same first ``prefix_words``
    words (for sentences of more than ``prefix_words`` words). Returns clusters, sorted, deterministic."""
    sentences = sorted(set(sentences))
    parent = list(range(len(sentences)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    words = [_words(s) for s in sentences]
    sets = [frozenset(w) for w in words]
    by_prefix: dict[tuple, int] = {}
    for i, w in enumerate(words):
        if len(w) > prefix_words:
            j = by_prefix.setdefault(tuple(w[:prefix_words]), i)
            union(i, j)
    for i in range(len(sentences)):
        a = sets[i]
        for j in range(i + 1, len(sentences)):
            b = sets[j]
            # Jaccard >= t needs min/max size >= t: skip hopeless pairs cheaply.
            if min(len(a), len(b)) < jaccard * max(len(a), len(b)):
                continue
            if len(a & b) >= jaccard * len(a | b):
                union(i, j)
    clusters: dict[int, list[str]] = {}
    for i, s in enumerate(sentences):
        clusters.setdefault(find(i), []).append(s)
    return sorted(clusters.values())


def split_sentences(clusters: list[list[str]], seed: int, dev_fraction: float, test_fraction: float) -> dict[str, str]:
    """English sentence -> split; whole clusters per split. Clusters are shuffled by the seed; dev
    and test are filled to their fractions of sentences with clusters that fit, the rest is train."""
    total = sum(map(len, clusters))
    order = sorted(range(len(clusters)), key=lambda k: _stable_int(seed, "split", clusters[k][0]))
    quota = {"dev": round(dev_fraction * total), "test": round(test_fraction * total)}
    out: dict[str, str] = {}
    for k in order:
        c = clusters[k]
        split = "train"
        for s in ("test", "dev"):
            if len(c) <= quota[s]:
                split = s
                quota[s] -= len(c)
                break
        out.update((sent, split) for sent in c)
    return out


# --------------------------------------------------------------------------- speech

_KAKASI = None
_CJK_PUNCT = str.maketrans({"。": ". ", "、": ", ", "「": " ", "」": " ", "『": " ", "』": " ", "・": " "})


def tts_text(lang: str, text: str) -> str:
    """What espeak-ng is given: tone-numbered pinyin for zh-CN, hiragana for ja, else the text."""
    if lang == "zh-CN":
        from pypinyin import Style, lazy_pinyin

        syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
        return " ".join(unicodedata.normalize("NFKC", s.translate(_CJK_PUNCT)) for s in syllables)
    if lang == "ja":
        global _KAKASI
        if _KAKASI is None:
            import pykakasi

            _KAKASI = pykakasi.kakasi()
        return " ".join(unicodedata.normalize("NFKC", t["hira"].translate(_CJK_PUNCT))
                        for t in _KAKASI.convert(text))
    return text


def synthesize(job: tuple[str, str, str, int, int]) -> tuple[int, str]:
    """(lang, text, mp3 path, speed, gap) -> (samples at 48 kHz, error or ""). Runs in workers."""
    lang, text, path, speed, gap = job
    voice = LANG_SOURCES[lang][1]
    try:
        proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-g", str(gap), "--stdout", "-b", "1"],
                              input=tts_text(lang, text).encode("utf-8"), capture_output=True, timeout=60, check=True)
        wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    except (subprocess.SubprocessError, OSError, RuntimeError) as err:
        return 0, f"espeak-ng failed: {err}"
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    wav = soxr.resample(wav, sr, CLIP_RATE).astype(np.float32)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0.99:
        wav *= 0.99 / peak  # soxr can overshoot slightly; mp3 encoding would clip
    sf.write(path, wav, CLIP_RATE, format="MP3")
    return len(wav), ""


# --------------------------------------------------------------------------- build

def _check_langs(langs: list[str]) -> list[str]:
    voiced = []
    for lang in langs:
        if lang not in LANG_SOURCES:
            raise ConfigError(f"langs: {lang!r} is not a CoVoST 2 source language")
        if LANG_SOURCES[lang][1] is None:
            print(f"note: leaving out {lang}: espeak-ng has no voice for it")
        else:
            voiced.append(lang)
    if not voiced:
        raise ConfigError("langs: no language with an espeak-ng voice selected")
    return voiced


def build_mini(cfg: MiniConfig) -> dict:
    """Build the corpus (see module doc). Returns the report written to ``<out>/mini_report.json``."""
    t0 = time.perf_counter()
    langs = _check_langs(list(cfg.langs))
    if shutil.which("espeak-ng") is None:
        raise DataError("espeak-ng not found: install it (apt-get install espeak-ng; install.sh does)")

    pairs = {lang: catalog_pairs(lang, cfg.seed) for lang in langs}
    english = sorted({en for p in pairs.values() for en in p})
    clusters = cluster_sentences(english, cfg.jaccard)
    split_of = split_sentences(clusters, cfg.seed, cfg.dev_fraction, cfg.test_fraction)

    jobs, rows, extra = [], {lang: [] for lang in langs}, {lang: [] for lang in langs}
    for lang in langs:
        available = sorted(pairs[lang], key=lambda en: _stable_int(cfg.seed, "sample", lang, en))
        chosen = sorted(available[: cfg.per_lang], key=lambda en: _stable_int(cfg.seed, "order", en))
        clips = os.path.join(cfg.out, lang, "clips")
        os.makedirs(clips, exist_ok=True)
        for en in chosen:
            name = f"common_voice_{lang}_{_stable_int(lang, en) % 10**9:09d}.mp3"
            rows[lang].append((name, pairs[lang][en], en, split_of[en]))
            jobs.append((lang, pairs[lang][en], os.path.join(clips, name), cfg.espeak_speed, cfg.espeak_gap))
        unused = [en for en in available[cfg.per_lang:] if split_of[en] == "train"]
        for en in unused[: cfg.extra_per_lang]:
            name = f"common_voice_{lang}_{_stable_int(lang, en) % 10**9:09d}.mp3"
            extra[lang].append((name, pairs[lang][en]))
            jobs.append((lang, pairs[lang][en], os.path.join(clips, name), cfg.espeak_speed, cfg.espeak_gap))

    bar = dict(total=len(jobs), desc="synthesising", unit="clip", mininterval=1.0)
    if cfg.num_workers > 1:
        with ProcessPoolExecutor(cfg.num_workers, mp_context=get_context("spawn")) as pool:
            results = list(tqdm(pool.map(synthesize, jobs, chunksize=8), **bar))
    else:
        results = [synthesize(j) for j in tqdm(jobs, **bar)]
    failures = [(j[2], err) for j, (_, err) in zip(jobs, results) if err]
    if failures:
        raise DataError(f"{failures[0][0]}: {failures[0][1]} ({len(failures)} clips failed)")
    samples = dict(zip((j[2] for j in jobs), (n for n, _ in results)))

    report = {"languages": {}, "left_out": [lang for lang in cfg.langs if lang not in langs]}
    for lang in langs:
        cv_rows = [[CLIENT_ID, name, src, 2, 0, "", "", ""]
                   for name, src in [(r[0], r[1]) for r in rows[lang]] + extra[lang]]
        write_manifest(os.path.join(cfg.out, lang, "validated.tsv"), cv_rows,
                       ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"])
        write_manifest(os.path.join(cfg.out, f"covost_v2.{lang}_{TARGET_LANG}.tsv"),
                       [[name, src, en, CLIENT_ID, split] for name, src, en, split in rows[lang]],
                       ["path", "sentence", "translation", "client_id", "split"])
        report["languages"][lang] = {
            s: {"clips": sum(r[3] == s for r in rows[lang]),
                "hours": round(sum(samples[os.path.join(cfg.out, lang, "clips", r[0])] for r in rows[lang]
                                   if r[3] == s) / CLIP_RATE / 3600, 4)}
            for s in SPLITS
        }
        report["languages"][lang]["extra_clips"] = len(extra[lang])
    used = {r[2] for lang in langs for r in rows[lang]}
    report["unique_english"] = {s: sum(1 for en in used if split_of[en] == s) for s in SPLITS}
    report["clusters"] = {"sentences": len(english), "clusters": len(clusters),
                          "largest": max(map(len, clusters), default=0)}
    report["total_hours"] = round(sum(samples.values()) / CLIP_RATE / 3600, 3)  # extra clips included

    if cfg.tokenizer_vocab:
        from comsl.data.tokenizer import train_tokenizer

        texts = [t for lang in langs for _, src, en, split in rows[lang] if split == "train" for t in (src, en)]
        train_tokenizer(texts, os.path.join(cfg.out, "tokenizer"), cfg.tokenizer_vocab)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["config"] = {k: v for k, v in vars(cfg).items() if k != "out"}
    with open(os.path.join(cfg.out, "mini_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    print(f"mini corpus: {len(langs)} languages, {len(jobs)} clips, {report['total_hours']} h, "
          f"unique English sentences per split: {report['unique_english']}, built in {report['seconds']} s")
    return report
