"""CoVoST 2 preparation: Common Voice clips + CoVoST translation TSVs -> validated per-split manifests.

Inputs (per source language ``<lang>``, CoVoST file-name codes such as ``fr``, ``zh-CN``):
- ``<covost_root>/covost_v2.<lang>_en.tsv`` with a ``split`` column (train/dev/test; ``train_covost``
  counts as train), or the per-split files ``covost_v2.<lang>_en.{train,dev,test}.tsv``;
  columns ``path``, ``translation`` and, when present, ``sentence`` (the transcript);
- ``<cv_root>/<lang>/clips/<path>`` audio, and ``<cv_root>/<lang>/validated.tsv`` for transcripts when
  the CoVoST file has no ``sentence`` column (as in the official release).

Every clip is validated (decoded in worker processes, one per core by default); each skipped one is
counted under one reason and listed in ``<out>/prepare_report.json``, rewritten after every language.
Languages finished by an interrupted run are kept in ``<out>/prepare_progress/`` and not redone.
Outputs ``<out>/{train,dev,test}.tsv`` (see comsl.data.manifest).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import soundfile as sf
from tqdm import tqdm

from comsl.data.audio import SAMPLING_RATE, num_samples_at
from comsl.data.manifest import read_tsv, write_manifest
from comsl.errors import DataError
from comsl.languages import ALL_LANGS, TARGET_LANG

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
# CoVoST's split column: "train_covost" rows are the extra training rows of its larger train set.
SPLIT_ALIASES = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}
# Skip reasons, in the order the report table shows them.
REASONS = ("missing_audio", "outside_clips", "decode_error", "truncated", "empty_transcript",
           "empty_translation", "too_short", "too_long", "duplicate")
# A decoded clip this much shorter than its header says is cut short (mp3 headers are exact to a frame).
TRUNCATED_FRACTION = 0.95


@dataclass(kw_only=True)
class PrepareConfig:
    """What ``comsl prepare covost2`` reads, writes and filters."""

    cv_root: str
    """Common Voice root holding ``<lang>/clips/`` and ``<lang>/validated.tsv``."""
    covost_root: str
    """Directory holding the ``covost_v2.<lang>_en[.split].tsv`` files."""
    out: str
    """Output directory for the manifests and ``prepare_report.json``."""
    langs: list[str] = field(default_factory=list)
    """CoVoST source-language codes; empty = every language with a TSV in ``covost_root``."""
    max_seconds: float = 11.0
    """Clips longer than this are skipped (``too_long``)."""
    min_seconds: float = 0.1
    """Clips shorter than this (0-sample clips included) are skipped (``too_short``)."""
    full_decode: bool = True
    """Decode every clip to validate it; False trusts file headers (fast, but corrupt or mislabelled
    mp3s then surface at training time, where they are skipped and counted)."""
    num_workers: int = 0
    """Processes decoding/validating clips in parallel; 0 = one per CPU core, 1 = in this process."""


@dataclass
class Row:
    """One CoVoST row before validation."""

    lang: str
    split: str
    path: str
    transcript: str
    translation: str
    source: str  # "file:line" of the row, for messages

    @property
    def id(self) -> str:
        # The whole relative path: sub/X.mp3 and X.mp3 are different clips.
        return f"{self.lang}_{os.path.splitext(self.path)[0].replace('/', '__')}"


def clean_text(text: str | None) -> str:
    """Collapse whitespace (tabs/newlines would break the TSV) and strip."""
    return " ".join((text or "").split())


def covost_files(covost_root: str, lang: str) -> dict[str, str] | str:
    """The per-split files of ``lang`` as {split: path}, or the path of its single file with a split column."""
    single = os.path.join(covost_root, f"covost_v2.{lang}_{TARGET_LANG}.tsv")
    per_split = {s: os.path.join(covost_root, f"covost_v2.{lang}_{TARGET_LANG}.{s}.tsv") for s in SPLITS}
    if all(os.path.isfile(p) for p in per_split.values()):
        return per_split
    if os.path.isfile(single):
        return single
    raise DataError(
        f"{covost_root}: no CoVoST 2 TSV for {lang!r}: expected {os.path.basename(single)} "
        f"or covost_v2.{lang}_{TARGET_LANG}.{{train,dev,test}}.tsv"
    )


def available_langs(covost_root: str) -> list[str]:
    """Languages (in ALL_LANGS order) that have CoVoST TSVs in ``covost_root``."""
    found = []
    for lang in ALL_LANGS:
        try:
            covost_files(covost_root, lang)
            found.append(lang)
        except DataError:
            pass
    return found


def _validated_transcripts(cv_root: str, lang: str) -> dict[str, str]:
    path = os.path.join(cv_root, lang, "validated.tsv")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found; the CoVoST TSV has no 'sentence' column, so transcripts "
                        "come from Common Voice's validated.tsv")
    return {r["path"]: r["sentence"] for _, r in read_tsv(path, ("path", "sentence"))}


def read_covost_rows(covost_root: str, cv_root: str, lang: str) -> list[Row]:
    """All rows of one language, with their split. Raises DataError for malformed TSVs (``file:line``)."""
    files = covost_files(covost_root, lang)
    tables = []
    if isinstance(files, str):
        tables.append((files, None, read_tsv(files, ("path", "translation", "split"))))
    else:
        tables.extend((p, s, read_tsv(p, ("path", "translation"))) for s, p in files.items())
    transcripts = None
    rows = []
    for path, fixed_split, table in tables:
        for line, r in table:
            if fixed_split is None:
                split = SPLIT_ALIASES.get(r["split"].strip())
                if split is None:
                    raise DataError(f"{path}:{line}: unknown split {r['split']!r} (expected train, "
                                    "train_covost, dev or test)")
            else:
                split = fixed_split
            if "sentence" in r:
                transcript = r["sentence"]
            else:
                if transcripts is None:
                    transcripts = _validated_transcripts(cv_root, lang)
                transcript = transcripts.get(r["path"], "")
            rows.append(Row(lang, split, r["path"].strip(), clean_text(transcript),
                            clean_text(r["translation"]), f"{path}:{line}"))
    return rows


def probe_clip(path: str, full_decode: bool = True) -> tuple[str | None, int, str]:
    """Validate one clip: (reason or None, n_samples at 16 kHz, detail). Runs in worker processes."""
    if not os.path.isfile(path):
        return "missing_audio", 0, "file not found"
    try:
        if full_decode:
            header = sf.info(path).frames
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
            if audio.size and not np.isfinite(audio).all():
                return "decode_error", 0, "NaN or inf samples"
            frames = audio.shape[0]
            if header > 0 and frames < TRUNCATED_FRACTION * header:
                return "truncated", 0, f"decoded {frames / sr:.2f} s of the {header / sr:.2f} s in its header"
        else:
            info = sf.info(path)
            frames, sr = info.frames, info.samplerate
    except Exception as err:  # libsndfile raises several types
        return "decode_error", 0, str(err).splitlines()[0][:200]
    return None, num_samples_at(int(frames), int(sr), SAMPLING_RATE), ""


def _probe_star(args):
    return probe_clip(*args)


class _Prober:
    """Validates clips: in this process (``num_workers <= 1``) or in a pool of worker processes
    started on first use and kept for every language of the run."""

    def __init__(self, num_workers: int):
        self.num_workers = num_workers
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, paths: list[str], full_decode: bool, desc: str) -> list[tuple[str | None, int, str]]:
        jobs = [(p, full_decode) for p in paths]
        bar = dict(total=len(jobs), desc=desc, unit="clip", mininterval=1.0)
        if self.num_workers <= 1 or not jobs:
            return [probe_clip(*j) for j in tqdm(jobs, **bar)]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.num_workers, mp_context=get_context("spawn"))
        chunk = max(1, min(64, len(jobs) // (4 * self.num_workers)))
        return list(tqdm(self._pool.map(_probe_star, jobs, chunksize=chunk), **bar))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _prepare_language(cfg: PrepareConfig, lang: str, probe: _Prober) -> dict:
    """One language: ``{"entries": {split: [manifest rows]}, "counts": {split: {reason|kept: n}},
    "skipped": [...]}`` (plain JSON, so it can be saved as the language's progress)."""
    rows = read_covost_rows(cfg.covost_root, cfg.cv_root, lang)
    counts = {s: Counter() for s in SPLITS}
    skipped: list[dict] = []

    def skip(row: Row, reason: str, detail: str = "") -> None:
        counts[row.split][reason] += 1
        skipped.append({"id": row.id, "lang": row.lang, "split": row.split, "path": row.path,
                        "reason": reason, "detail": detail, "row": row.source})

    # Text checks and duplicates first: no need to decode clips that are skipped anyway.
    seen: set[str] = set()
    to_probe: list[Row] = []
    for row in rows:
        if not row.transcript:
            skip(row, "empty_transcript")
        elif not row.translation:
            skip(row, "empty_translation")
        elif row.path in seen:
            skip(row, "duplicate", "path already listed for this language")
        else:
            seen.add(row.path)
            to_probe.append(row)

    kept_rows = []
    for row in to_probe:
        clips = os.path.abspath(os.path.join(cfg.cv_root, row.lang, "clips"))
        audio = os.path.abspath(os.path.join(clips, row.path))
        if os.path.commonpath([clips, audio]) != clips:  # ../x or /etc/passwd: never opened
            skip(row, "outside_clips", f"path leaves {clips}")
        else:
            kept_rows.append(row)
    to_probe = kept_rows
    audio_paths = [os.path.abspath(os.path.join(cfg.cv_root, r.lang, "clips", r.path)) for r in to_probe]
    results = probe(audio_paths, cfg.full_decode, f"validating {lang} clips")
    min_n, max_n = cfg.min_seconds * SAMPLING_RATE, cfg.max_seconds * SAMPLING_RATE
    entries: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for row, audio, (reason, n, detail) in zip(to_probe, audio_paths, results):
        if reason is None and n < min_n:
            reason, detail = "too_short", f"{n / SAMPLING_RATE:.2f} s < {cfg.min_seconds} s"
        elif reason is None and n > max_n:
            reason, detail = "too_long", f"{n / SAMPLING_RATE:.2f} s > {cfg.max_seconds} s"
        if reason is not None:
            skip(row, reason, detail)
            continue
        counts[row.split]["kept"] += 1
        entries[row.split].append({
            "id": row.id, "audio": audio, "n_samples": n, "duration": f"{n / SAMPLING_RATE:.3f}",
            "src_lang": row.lang, "tgt_lang": TARGET_LANG, "transcript": row.transcript,
            "translation": row.translation,
        })
    return {"entries": entries, "counts": {s: dict(c) for s, c in counts.items()}, "skipped": skipped}


class _Progress:
    """Finished languages of an interrupted run: ``<out>/prepare_progress/<lang>.json``, each written
    atomically with a fingerprint of what produced it (settings, the language's TSVs). A rerun reuses a
    language only when its fingerprint still matches."""

    def __init__(self, cfg: PrepareConfig):
        self.cfg = cfg
        self.dir = os.path.join(cfg.out, "prepare_progress")

    def _fingerprint(self, lang: str) -> dict:
        files = covost_files(self.cfg.covost_root, lang)
        tsvs = [files] if isinstance(files, str) else list(files.values())
        validated = os.path.join(self.cfg.cv_root, lang, "validated.tsv")
        stats = {p: [os.path.getsize(p), os.path.getmtime(p)] for p in [*tsvs, validated] if os.path.isfile(p)}
        c = self.cfg
        return {"cv_root": os.path.abspath(c.cv_root), "covost_root": os.path.abspath(c.covost_root),
                "max_seconds": c.max_seconds, "min_seconds": c.min_seconds, "full_decode": c.full_decode,
                "files": stats}

    def load(self, lang: str) -> dict | None:
        path = os.path.join(self.dir, f"{lang}.json")
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError):
            return None
        return saved["result"] if saved.get("fingerprint") == self._fingerprint(lang) else None

    def save(self, lang: str, result: dict) -> None:
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f"{lang}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"fingerprint": self._fingerprint(lang), "result": result}, f, ensure_ascii=False)
        os.replace(path + ".tmp", path)


def prepare_covost2(cfg: PrepareConfig) -> dict:
    """Validate and write manifests + report (see module doc), one language at a time: after each,
    its results are saved (a rerun after an interruption skips it) and ``prepare_report.json`` is
    rewritten (``complete`` false until the end). Returns the final report dict."""
    langs = list(cfg.langs) or available_langs(cfg.covost_root)
    if not langs:
        raise DataError(f"{cfg.covost_root}: no covost_v2.<lang>_en*.tsv files found")
    os.makedirs(cfg.out, exist_ok=True)
    progress = _Progress(cfg)
    probe = _Prober(cfg.num_workers or os.cpu_count() or 1)
    done: dict[str, dict] = {}
    try:
        for lang in langs:
            result = progress.load(lang)
            if result is None:
                result = _prepare_language(cfg, lang, probe)
                progress.save(lang, result)
            else:
                log.info("%s: already prepared by an earlier run (%s), not redone", lang, progress.dir)
            done[lang] = result
            _write_report(cfg, langs, done)
    finally:
        probe.close()
    manifests = {s: [e for lang in langs for e in done[lang]["entries"][s]] for s in SPLITS}
    for split, entries in manifests.items():
        write_manifest(os.path.join(cfg.out, f"{split}.tsv"), entries)
    report = _write_report(cfg, langs, done)
    print(format_report(report))
    return report


def _write_report(cfg: PrepareConfig, langs: list[str], done: dict[str, dict]) -> dict:
    """The report over the languages done so far, written to ``<out>/prepare_report.json``."""
    per_lang = {}
    for lang, result in done.items():
        per_lang[lang] = {}
        for split in SPLITS:
            c = result["counts"][split]
            hours = sum(e["n_samples"] for e in result["entries"][split]) / SAMPLING_RATE / 3600
            per_lang[lang][split] = {"kept": c.get("kept", 0), "kept_hours": round(hours, 4),
                                     "skipped": {r: c[r] for r in REASONS if c.get(r)}}
    skipped = [s for result in done.values() for s in result["skipped"]]
    totals = Counter(s["reason"] for s in skipped)
    report = {
        "config": {"cv_root": os.path.abspath(cfg.cv_root), "covost_root": os.path.abspath(cfg.covost_root),
                   "max_seconds": cfg.max_seconds, "min_seconds": cfg.min_seconds,
                   "full_decode": cfg.full_decode},
        "complete": len(done) == len(langs),
        "pending": [lang for lang in langs if lang not in done],
        "kept": {s: sum(len(r["entries"][s]) for r in done.values()) for s in SPLITS},
        "skipped_total": {r: totals[r] for r in REASONS if totals[r]},
        "languages": per_lang,
        "skipped": skipped,
    }
    path = os.path.join(cfg.out, "prepare_report.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    os.replace(path + ".tmp", path)
    return report


def format_report(report: dict) -> str:
    """A table: one row per language and split, kept count and one column per skip reason."""
    cols = ["lang", "split", "kept", *REASONS]
    lines = [cols]
    for lang, splits in report["languages"].items():
        for split, c in splits.items():
            lines.append([lang, split, str(c["kept"]), *(str(c["skipped"].get(r, 0)) for r in REASONS)])
    lines.append(["all", "", str(sum(report["kept"].values())),
                  *(str(report["skipped_total"].get(r, 0)) for r in REASONS)])
    widths = [max(len(row[i]) for row in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in lines)
