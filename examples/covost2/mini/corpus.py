"""The offline mini corpus: real human translations (gettext catalogs of Django and of Debian packages,
``mini.catalogs``) read aloud by espeak-ng (``mini.speech``), laid out exactly like Common Voice +
CoVoST 2 so ``comsl prepare covost2`` runs on it unchanged. Run by examples/covost2/run.sh as
``python -m mini.corpus --out DIR ...`` (PYTHONPATH=examples/covost2).

Text: every filtered pair of every source, one per (language, English sentence). Split: once per English
sentence across every source and language (``mini.split``), so no dev/test reference or near-copy of it
is a training target, in text or in speech. Speech: ``per_lang`` train, ``dev_per_lang`` dev and
``test_per_lang`` test clips per language, drawn (seeded) from the pairs short enough to speak; a clip
longer than ``max_seconds`` is discarded and another sentence drawn. All train-split text is listed for
stage 1 (``pairs.tsv``; ``mini.text``).

Layout under ``out``: ``<lang>/clips/*.mp3``, ``<lang>/validated.tsv`` (Common Voice columns),
``covost_v2.<lang>_en.tsv`` (path, sentence, translation, client_id, split), ``pairs.tsv`` (every pair:
lang, english, translation, source, split, clip), ``mini_report.json`` and, unless disabled,
``tokenizer/`` (sentencepiece trained on the train split's text).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

from tqdm import tqdm

from comsl.data.manifest import write_manifest
from comsl.errors import ComSLError, ConfigError, DataError
from comsl.languages import ALL_LANGS, TARGET_LANG, parse_langs
from mini.catalogs import LANG_SOURCES, Pair, _stable_int, catalog_pairs
from mini.debian import DEBIAN_PACKAGES, debian_roots
from mini.speech import CLIP_RATE, synthesize
from mini.split import SPLITS, cluster_sentences, split_sentences

VOICED_LANGS: tuple[str, ...] = tuple(lang for lang in ALL_LANGS if LANG_SOURCES[lang][2])
CLIENT_ID = "espeak-ng"
PAIR_COLUMNS = ["lang", "english", "translation", "source", "split", "clip"]
HELD_OUT_RESERVE = 2
"""Dev/test keep this many candidate sentences per clip wanted, for clips that come out too long."""
SPEAKABLE_SHARE = 0.75
"""Share of ``max_seconds`` a sentence's words may fill at the espeak-ng speed to be a speech candidate
(pauses and long words take the rest)."""


@dataclass(kw_only=True)
class MiniConfig:
    """What ``python -m mini.corpus`` builds."""

    out: str
    """Output directory (Common Voice root and CoVoST root at once)."""
    langs: list[str] = field(default_factory=lambda: list(VOICED_LANGS))
    """CoVoST source-language codes; ``mn`` is left out (no espeak-ng voice)."""
    per_lang: int = 160
    """Training clips per language (fewer where a language has fewer train-split sentences)."""
    dev_per_lang: int = 20
    """Dev clips per language."""
    test_per_lang: int = 50
    """Test clips per language."""
    max_seconds: float = 6.0
    """Longest clip kept; a longer one is replaced by another sentence of the same split."""
    seed: int = 0
    """Seed for placeholder fills, the split and the sentences spoken."""
    espeak_speed: int = 130
    """espeak-ng speed in words per minute (its default is 175; slower is easier to recognise)."""
    espeak_gap: int = 4
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
    debian_cache: str | None = None
    """Directory caching the Debian packages (``.deb`` files and unpacked trees); None reads Django's
    catalogs only."""
    debian_packages: list[str] = field(default_factory=lambda: list(DEBIAN_PACKAGES))
    """Debian packages whose catalogs are read (with ``debian_cache``)."""


def _check_langs(langs: list[str]) -> list[str]:
    voiced = []
    for lang in langs:
        if lang not in LANG_SOURCES:
            raise ConfigError(f"langs: {lang!r} is not a CoVoST 2 source language")
        if LANG_SOURCES[lang][2] is None:
            print(f"note: leaving out {lang}: espeak-ng has no voice for it")
        else:
            voiced.append(lang)
    if not voiced:
        raise ConfigError("langs: no language with an espeak-ng voice selected")
    return voiced


def _clip_name(pair: Pair) -> str:
    return f"common_voice_{pair.lang}_{_stable_int(pair.lang, pair.english) % 10**9:09d}.mp3"


def _synthesize(cfg: MiniConfig, jobs: list[tuple]) -> list[tuple[int, str]]:
    bar = dict(total=len(jobs), desc="synthesising", unit="clip", mininterval=1.0)
    if cfg.num_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(cfg.num_workers, mp_context=get_context("spawn")) as pool:
            results = list(tqdm(pool.map(synthesize, jobs, chunksize=8), **bar))
    else:
        results = [synthesize(j) for j in tqdm(jobs, **bar)]
    failures = [(j[2], err) for j, (_, err) in zip(jobs, results) if err]
    if failures:
        raise DataError(f"{failures[0][0]}: {failures[0][1]} ({len(failures)} clips failed)")
    return results


def _speakable(cfg: MiniConfig, pair: Pair) -> bool:
    # scripts without spaces count as one word: their clips are measured after synthesis like all others
    return len(pair.translation.split()) <= SPEAKABLE_SHARE * cfg.max_seconds * cfg.espeak_speed / 60


def choose_clips(cfg: MiniConfig, pairs: dict[str, list[Pair]], split_of: dict[str, str]
                 ) -> tuple[dict[tuple[str, str], list[tuple[Pair, int]]], Counter]:
    """Synthesise the clips of every (language, split): candidates in a seeded order, in rounds, until
    each quota holds clips of at most ``max_seconds``. Returns ``{(lang, split): [(pair, samples)]}``
    and the number of too-long clips discarded per language."""
    quota = {"train": cfg.per_lang, "dev": cfg.dev_per_lang, "test": cfg.test_per_lang}
    queues = {(lang, s): sorted((p for p in pairs[lang] if split_of[p.english] == s and _speakable(cfg, p)),
                                key=lambda p: _stable_int(cfg.seed, "sample", p.lang, p.english))
              for lang in pairs for s in SPLITS}
    tried = {key: 0 for key in queues}
    chosen: dict[tuple[str, str], list[tuple[Pair, int]]] = {key: [] for key in queues}
    too_long: Counter = Counter()
    while True:
        batch = []
        for key, queue in queues.items():
            short = quota[key[1]] - len(chosen[key])
            take = min(len(queue) - tried[key], short + short // 4 + 1) if short > 0 else 0
            batch += [(key, p) for p in queue[tried[key]: tried[key] + take]]
            tried[key] += take
        if not batch:
            return chosen, too_long
        paths = [os.path.join(cfg.out, p.lang, "clips", _clip_name(p)) for _, p in batch]
        jobs = [(p.lang, p.translation, path, cfg.espeak_speed, cfg.espeak_gap) for (_, p), path in zip(batch, paths)]
        for ((key, pair), path), (samples, _) in zip(zip(batch, paths), _synthesize(cfg, jobs)):
            if samples > cfg.max_seconds * CLIP_RATE or len(chosen[key]) >= quota[key[1]]:
                too_long[key[0]] += samples > cfg.max_seconds * CLIP_RATE
                os.remove(path)
            else:
                chosen[key].append((pair, samples))


def _extra_clips(cfg: MiniConfig, pairs: dict[str, list[Pair]], split_of: dict[str, str],
                 spoken: set[tuple[str, str]]) -> dict[str, list[Pair]]:
    """``extra_per_lang`` more train-split sentences per language, synthesised for validated.tsv only."""
    extra = {}
    for lang, lang_pairs in pairs.items():
        unused = [p for p in lang_pairs if split_of[p.english] == "train" and (lang, p.english) not in spoken]
        extra[lang] = sorted(unused, key=lambda p: _stable_int(cfg.seed, "extra", lang, p.english))[: cfg.extra_per_lang]
    jobs = [(p.lang, p.translation, os.path.join(cfg.out, p.lang, "clips", _clip_name(p)), cfg.espeak_speed,
             cfg.espeak_gap) for ps in extra.values() for p in ps]
    _synthesize(cfg, jobs)
    return extra


def _write_corpus(cfg: MiniConfig, pairs: dict[str, list[Pair]], split_of: dict[str, str],
                  chosen: dict[tuple[str, str], list[tuple[Pair, int]]], extra: dict[str, list[Pair]]) -> None:
    clip_of = {(p.lang, p.english): _clip_name(p) for rows in chosen.values() for p, _ in rows}
    for lang in pairs:
        spoken = sorted((p for s in SPLITS for p, _ in chosen[(lang, s)]),
                        key=lambda p: _stable_int(cfg.seed, "order", p.english))
        write_manifest(os.path.join(cfg.out, lang, "validated.tsv"),
                       [[CLIENT_ID, _clip_name(p), p.translation, 2, 0, "", "", ""] for p in spoken + extra[lang]],
                       ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"])
        write_manifest(os.path.join(cfg.out, f"covost_v2.{lang}_{TARGET_LANG}.tsv"),
                       [[_clip_name(p), p.translation, p.english, CLIENT_ID, split_of[p.english]] for p in spoken],
                       ["path", "sentence", "translation", "client_id", "split"])
    write_manifest(os.path.join(cfg.out, "pairs.tsv"),
                   [[p.lang, p.english, p.translation, p.source, split_of[p.english],
                     clip_of.get((p.lang, p.english), "")] for lang_pairs in pairs.values() for p in lang_pairs],
                   PAIR_COLUMNS)


def _report(cfg, langs, pairs, split_of, clusters, chosen, too_long, extra, debian) -> dict:
    report: dict = {"languages": {}, "left_out": [lang for lang in cfg.langs if lang not in langs]}
    for lang in langs:
        report["languages"][lang] = {
            s: {"clips": len(chosen[(lang, s)]),
                "hours": round(sum(n for _, n in chosen[(lang, s)]) / CLIP_RATE / 3600, 4),
                "text_pairs": sum(split_of[p.english] == s for p in pairs[lang])}
            for s in SPLITS
        }
        report["languages"][lang]["extra_clips"] = len(extra[lang])
        report["languages"][lang]["too_long_discarded"] = too_long[lang]
        report["languages"][lang]["pairs_per_source"] = dict(sorted(Counter(p.source for p in pairs[lang]).items()))
    report["unique_english"] = dict(Counter(split_of[en] for en in split_of))
    report["clusters"] = {"sentences": len(split_of), "clusters": len(clusters),
                          "largest": max(map(len, clusters), default=0)}
    report["debian_packages"] = [package for package, _ in debian]
    return report


def build_mini(cfg: MiniConfig) -> dict:
    """Build the corpus (see module doc). Returns the report written to ``<out>/mini_report.json``."""
    t0 = time.perf_counter()
    langs = _check_langs(list(cfg.langs))
    if shutil.which("espeak-ng") is None:
        raise DataError("espeak-ng not found: install it (apt-get install espeak-ng; install.sh does)")
    debian = debian_roots(cfg.debian_cache, cfg.debian_packages) if cfg.debian_cache else []
    pairs = {lang: catalog_pairs(lang, cfg.seed, debian) for lang in langs}
    english = sorted({p.english for ps in pairs.values() for p in ps})
    clusters = cluster_sentences(english, cfg.jaccard)
    langs_of: dict[str, set[str]] = {}
    for p in (p for ps in pairs.values() for p in ps if _speakable(cfg, p)):
        langs_of.setdefault(p.english, set()).add(p.lang)
    need = {s: {lang: HELD_OUT_RESERVE * n for lang in langs}
            for s, n in (("dev", cfg.dev_per_lang), ("test", cfg.test_per_lang))}
    split_of = split_sentences(clusters, langs_of, need, cfg.seed)

    for lang in langs:
        os.makedirs(os.path.join(cfg.out, lang, "clips"), exist_ok=True)
    chosen, too_long = choose_clips(cfg, pairs, split_of)
    spoken = {(p.lang, p.english) for rows in chosen.values() for p, _ in rows}
    extra = _extra_clips(cfg, pairs, split_of, spoken)
    _write_corpus(cfg, pairs, split_of, chosen, extra)

    report = _report(cfg, langs, pairs, split_of, clusters, chosen, too_long, extra, debian)
    if cfg.tokenizer_vocab:
        from comsl.data.tokenizer import train_tokenizer

        texts = [t for ps in pairs.values() for p in ps if split_of[p.english] == "train" for t in (p.translation, p.english)]
        train_tokenizer(texts, os.path.join(cfg.out, "tokenizer"), cfg.tokenizer_vocab)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["config"] = {k: v for k, v in vars(cfg).items() if k != "out"}
    with open(os.path.join(cfg.out, "mini_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    quota = {"train": cfg.per_lang, "dev": cfg.dev_per_lang, "test": cfg.test_per_lang}
    for (lang, s), rows in sorted(chosen.items()):
        if len(rows) < quota[s]:
            print(f"note: {lang} {s}: {len(rows)} of {quota[s]} clips (too few sentences short enough to speak)")
    clips = {s: sum(report["languages"][lang][s]["clips"] for lang in langs) for s in SPLITS}
    text = {s: sum(report["languages"][lang][s]["text_pairs"] for lang in langs) for s in SPLITS}
    print(f"mini corpus: {len(langs)} languages; clips per split {clips}; text pairs per split {text} "
          f"(sources: django{''.join(', debian:' + p for p, _ in debian)}); built in {report['seconds']} s")
    return report


def main(argv: list[str] | None = None) -> int:
    d = MiniConfig(out="")
    p = argparse.ArgumentParser(prog="python -m mini.corpus", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (Common Voice + CoVoST 2 layout)")
    p.add_argument("--langs", default=None, help="comma-separated CoVoST codes (default: all with a voice)")
    p.add_argument("--per-lang", type=int, default=d.per_lang, help=f"training clips per language [{d.per_lang}]")
    p.add_argument("--dev-per-lang", type=int, default=d.dev_per_lang, help=f"dev clips per language [{d.dev_per_lang}]")
    p.add_argument("--test-per-lang", type=int, default=d.test_per_lang,
                   help=f"test clips per language [{d.test_per_lang}]")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, help=f"longest clip [{d.max_seconds}]")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for fills, the split and the spoken sentences")
    p.add_argument("--espeak-speed", type=int, default=d.espeak_speed, help=f"words per minute [{d.espeak_speed}]")
    p.add_argument("--espeak-gap", type=int, default=d.espeak_gap, help=f"word gap, 10 ms units [{d.espeak_gap}]")
    p.add_argument("--workers", type=int, default=d.num_workers, help=f"synthesis processes [{d.num_workers}]")
    p.add_argument("--tokenizer-vocab", type=int, default=d.tokenizer_vocab,
                   help=f"sentencepiece size of <out>/tokenizer (0 = none) [{d.tokenizer_vocab}]")
    p.add_argument("--extra-per-lang", type=int, default=d.extra_per_lang,
                   help="extra clips per language only in validated.tsv, for 'comsl prepare pseudo' [0]")
    p.add_argument("--debian-cache", default=None,
                   help="cache directory for Debian packages' catalogs (apt-get download); omit for Django only")
    args = p.parse_args(argv)
    try:
        langs = parse_langs(args.langs) if args.langs else list(VOICED_LANGS)
        build_mini(MiniConfig(
            out=args.out, langs=langs, per_lang=args.per_lang, dev_per_lang=args.dev_per_lang,
            test_per_lang=args.test_per_lang, max_seconds=args.max_seconds, seed=args.seed,
            espeak_speed=args.espeak_speed, espeak_gap=args.espeak_gap, num_workers=args.workers,
            tokenizer_vocab=args.tokenizer_vocab, extra_per_lang=args.extra_per_lang, debian_cache=args.debian_cache))
    except (ComSLError, ValueError) as err:
        print(f"mini.corpus: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
