"""The tab-separated files comsl reads and writes: prepared manifests, CoVoST and Common Voice TSVs.

All are read and written the way fairseq and the CoVoST release do: a header row, tabs between
fields, ``QUOTE_NONE`` (quotes are plain text), ``\\n`` line ends. Text is expected free of tabs
and newlines (``comsl.data.covost2.clean_text``).

A *manifest* is what ``comsl prepare`` writes per split (``<out>/{train,dev,test}.tsv``): one row per
validated utterance with MANIFEST_COLUMNS.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence

from comsl.errors import DataError

MANIFEST_COLUMNS = ("id", "audio", "n_samples", "duration", "src_lang", "tgt_lang", "transcript", "translation")


def _read_utf8(path: str) -> str:
    """The file's text; a UTF-8 byte-order mark (as some editors write) is dropped. Raises DataError with
    ``file:line`` for bytes that are not UTF-8."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[err.start]:#04x}); re-save the file as UTF-8"
                        ) from err


def read_tsv(path: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Read a tab-separated file with a header, the way fairseq does (QUOTE_NONE: quotes are text).

    Returns (line number, row dict) pairs. Raises DataError with ``file:line`` for a missing header
    column or a row whose number of fields differs from the header's.
    """
    out = []
    with io.StringIO(_read_utf8(path), newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}:1: empty file, expected a header with columns {', '.join(required)}")
        header = [h.strip() for h in header]
        for col in required:
            if col not in header:
                raise DataError(f"{path}:1: missing column {col!r} (header has: {', '.join(header)})")
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: expected {len(header)} tab-separated fields "
                    f"({', '.join(header)}), got {len(fields)}; fix or remove the row"
                )
            out.append((reader.line_num, dict(zip(header, fields))))
    return out


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping | Sequence],
                   columns: Sequence[str] = MANIFEST_COLUMNS) -> None:
    """Write ``rows`` under a ``columns`` header (default: a prepared manifest).

    A row is a mapping (its values for ``columns`` are written, other keys ignored) or a sequence
    already in ``columns`` order. Raises ValueError for a sequence of the wrong length.
    """
    with open(path, "w", encoding="utf-8", newline="") as f:
        # quotechar=None: quotes are plain text, as in the CoVoST TSVs.
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            if isinstance(row, Mapping):
                row = [row[c] for c in columns]
            elif len(row) != len(columns):
                raise ValueError(f"{path}: row of {len(row)} fields under a header of {len(columns)}: {row!r}")
            w.writerow(row)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Read a manifest written by ``write_manifest``; ``n_samples`` as int, ``duration`` as float.

    Raises DataError with ``file:line`` on a malformed row or a missing column.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: manifest not found; create it with 'comsl prepare covost2'")
    out = []
    # Relative audio paths are relative to the manifest's folder (training and evaluation alike).
    folder = os.path.dirname(os.path.abspath(path))
    for line, r in read_tsv(path, MANIFEST_COLUMNS):
        r["audio"] = os.path.join(folder, r["audio"])
        try:
            r["n_samples"] = int(r["n_samples"])
            r["duration"] = float(r["duration"])
        except ValueError as err:
            raise DataError(f"{path}:{line}: bad n_samples/duration ({err})") from err
        out.append(r)
    return out
