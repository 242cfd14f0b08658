"""Parallel text from gettext catalogs: human translations of program messages, English msgid ->
translated msgstr, read with polib (``.po`` and ``.mo`` alike).

Sources: Django's wheel (``django/conf/locale`` and ``django/contrib/*/locale``, BSD-3) and, where apt
can fetch them, Debian packages' ``/usr/share/locale/<locale>/LC_MESSAGES/*.mo`` (``mini.debian``;
licences follow each package, so the corpus is built at run time and never committed).

Every source goes through the same filters and fills: placeholders (``%(name)s``, ``%s``, ``%2$d``,
``{name}``) are filled with names and numbers decided by the English string and the seed, identical
in every language; HTML tags are stripped; an entry is kept when both sides have no newline, no
left-over placeholder or command-line syntax, and the English has 2 to ``MAX_WORDS`` words and a
letter. Plural entries use the forms for the number filled in.
"""

from __future__ import annotations

import gettext
import glob
import hashlib
import html
import os
import re
from dataclasses import dataclass

from comsl.errors import DataError

# CoVoST code -> (Django locale directory, Debian locale directories, espeak-ng voice).
# No espeak-ng voice speaks Mongolian.
LANG_SOURCES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "fr": ("fr", ("fr",), "fr"), "de": ("de", ("de",), "de"), "es": ("es", ("es",), "es"),
    "ca": ("ca", ("ca",), "ca"), "fa": ("fa", ("fa",), "fa"), "it": ("it", ("it",), "it"),
    "ru": ("ru", ("ru",), "ru"), "pt": ("pt", ("pt", "pt_BR", "pt_PT"), "pt"),
    "zh-CN": ("zh_Hans", ("zh_CN",), "cmn-latn-pinyin"), "tr": ("tr", ("tr",), "tr"),
    "ar": ("ar", ("ar",), "ar"), "et": ("et", ("et",), "et"), "mn": ("mn", ("mn",), None),
    "nl": ("nl", ("nl",), "nl"), "sv-SE": ("sv", ("sv",), "sv"), "lv": ("lv", ("lv",), "lv"),
    "sl": ("sl", ("sl",), "sl"), "ta": ("ta", ("ta",), "ta"), "ja": ("ja", ("ja",), "ja"),
    "id": ("id", ("id",), "id"), "cy": ("cy", ("cy",), "cy"),
}
MAX_WORDS = 25
"""Longer messages are help texts, not sentences."""

# Placeholder fillers: proper nouns and numbers carry over unchanged into every translation.
_PEOPLE = ("Maria", "Daniel", "Anna", "Lucas", "Sofia", "David", "Elena", "Omar", "Laura", "Martin")
_PLACES = ("Paris", "Berlin", "Madrid", "Lisbon", "Rome", "Tokyo", "Cairo", "Oslo", "Lima", "Vienna")
_NUMBERS = (2, 3, 4, 5, 7, 8, 10, 12, 20, 50)
_NUMERIC_NAME = re.compile(r"count|num|max|min|limit|size|length|value|digit|place|year|day|month|"
                           r"hour|minute|second|week|total|cost|amount|page|index|version", re.I)
_PERSON_NAME = re.compile(r"user|author|person|owner|^name$|first_name|last_name|full_name", re.I)
_FLAGS = r"[-#0 +']*\d*(?:\.\d+)?"
_PLACEHOLDER = re.compile(rf"%\((?P<name>\w+)\)(?P<f1>{_FLAGS}[sdifr])"
                          rf"|%(?:(?P<pos>[1-9])\$)?(?P<f2>{_FLAGS}(?:hh|h|ll|l|z|j|t)?[sdiufr])"
                          r"|\{(?P<brace>\w*)\}")
_HTML_TAG = re.compile(r"</?(?:a|b|i|u|em|strong|code|tt|kbd|var|abbr|span|p|br|li|ul|small|sup|sub)\b[^>]*>",
                       re.I)
# what is left after filling and cleaning means code, options or markup, not a sentence
_NOT_PROSE = re.compile(r"[%{}<>\[\]|\\_=`$~^#@*]|--|^-")


@dataclass(frozen=True)
class Pair:
    """One parallel sentence: an English message and its translation, from one source."""

    lang: str
    """CoVoST source-language code of the translation."""
    english: str
    """English sentence (the translation target)."""
    translation: str
    """The sentence in ``lang`` (what is spoken and transcribed)."""
    source: str
    """Where it comes from: ``django`` or ``debian:<package>``."""


def _stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _fill_value(name: str, fmt: str, msgid: str, seed: int, k: int) -> str:
    r = _stable_int(msgid, seed, name, k)
    if fmt in "diuf" or _NUMERIC_NAME.search(name):
        return str(_NUMBERS[r % len(_NUMBERS)])
    if _PERSON_NAME.search(name):
        return _PEOPLE[r % len(_PEOPLE)]
    return _PLACES[r % len(_PLACES)]


def _key(m: re.Match, k: int) -> str:
    name = m.group("name") or m.group("brace") or ""
    if name:
        return name
    return f"#{int(m.group('pos')) - 1}" if m.group("pos") else f"#{k}"


def placeholder_values(msgid: str, seed: int) -> list[tuple[str, str]]:
    """The (placeholder key, value) fills of an English string; keys are names or positions."""
    out = []
    for k, m in enumerate(_PLACEHOLDER.finditer(msgid)):
        fmt = (m.group("f1") or m.group("f2") or "s")[-1]
        out.append((_key(m, k), _fill_value(m.group("name") or m.group("brace") or "", fmt, msgid, seed, k)))
    return out


def fill_placeholders(text: str, values: dict[str, str]) -> str | None:
    """Replace placeholders by the English string's fills (named ones by name, positional ones in
    order or by their ``%N$`` index); None when the text has a placeholder the English does not."""
    k = 0
    missing = False

    def sub(m):
        nonlocal k, missing
        key = _key(m, k)
        k += 1
        if key not in values:
            missing = True
            return ""
        return values[key]

    text = _PLACEHOLDER.sub(sub, text.replace("%%", "%"))
    return None if missing else text


def clean_markup(text: str) -> str:
    """Strip HTML tags and entities, and collapse whitespace."""
    text = html.unescape(_HTML_TAG.sub(" ", text))
    return " ".join(text.replace("\u00a0", " ").split())


def _plural_function(catalog):
    m = re.search(r"plural=([^;\n]+)", catalog.metadata.get("Plural-Forms", ""))
    return gettext.c2py(m.group(1).strip()) if m else (lambda n: int(n != 1))


def read_catalog(path: str, lang: str, source: str, seed: int) -> list[Pair]:
    """The filtered, filled pairs of one ``.po``/``.mo`` catalog (see module doc), in catalog order.
    Raises DataError naming the file when polib cannot read it."""
    import polib

    try:
        catalog = polib.mofile(path) if path.endswith(".mo") else polib.pofile(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the gettext catalog ({err})") from err
    plural = _plural_function(catalog)
    pairs = []
    for e in catalog.translated_entries():  # neither fuzzy nor obsolete nor untranslated
        values = dict(placeholder_values(e.msgid, seed))
        en_src, tr_src = e.msgid, e.msgstr
        if e.msgid_plural:
            numbers = [int(v) for v in values.values() if v.isdigit()]
            n = numbers[0] if numbers else 1
            # The fills come from the singular msgid (same placeholder names as the plural), so
            # the number in the English and the plural form picked for the translation agree.
            en_src = e.msgid if n == 1 else e.msgid_plural
            tr_src = e.msgstr_plural.get(int(plural(n)), "")
        if not tr_src.strip() or "\n" in en_src + tr_src:
            continue
        en, tr = fill_placeholders(en_src, values), fill_placeholders(tr_src, values)
        if en is None or tr is None:
            continue
        en, tr = clean_markup(en), clean_markup(tr)
        if not 2 <= len(en.split()) <= MAX_WORDS or not re.search(r"[A-Za-z]", en) or not tr or en == tr:
            continue
        if _NOT_PROSE.search(en) or _NOT_PROSE.search(tr):
            continue
        pairs.append(Pair(lang, en, tr, source))
    return pairs


def django_catalogs(lang: str) -> list[str]:
    """Paths of Django's django.po/djangojs.po catalogs (core + contrib) for a CoVoST language."""
    try:
        import django
    except ImportError as err:
        raise DataError("the mini corpus needs Django's translation catalogs: pip install 'comsl[mini]'") from err
    root = os.path.dirname(django.__file__)
    pattern = os.path.join("locale", LANG_SOURCES[lang][0], "LC_MESSAGES", "django*.po")
    return sorted(glob.glob(os.path.join(root, "conf", pattern)) + glob.glob(os.path.join(root, "contrib", "*", pattern)))


def catalog_pairs(lang: str, seed: int, debian: list[tuple[str, str]] = ()) -> list[Pair]:
    """Every pair of ``lang`` from Django's catalogs, then from the ``(package, unpacked root)`` Debian
    trees in order; one pair per English sentence (the first source wins)."""
    found: dict[str, Pair] = {}
    sources = [("django", path) for path in django_catalogs(lang)]
    for package, root in debian:
        for locale in LANG_SOURCES[lang][1]:
            pattern = os.path.join(root, "usr", "share", "locale", locale, "LC_MESSAGES", "*.mo")
            sources += [(f"debian:{package}", path) for path in sorted(glob.glob(pattern))]
    for source, path in sources:
        for pair in read_catalog(path, lang, source, seed):
            found.setdefault(pair.english, pair)
    return list(found.values())
