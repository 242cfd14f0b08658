"""The built wheel installs one import name, ``comsl`` (issue 14: no generic top-level ``evaluation``)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_the_comsl_import_name(tmp_path):
    src = tmp_path / "src"
    # build from a copy: an in-tree build would leave build/ and egg-info in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "exp", "data", "runs", "work"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(src), "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("comsl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
        top_level = next(n for n in zf.namelist() if n.endswith("top_level.txt"))
        declared = zf.read(top_level).decode().split()
    assert {t for t in tops if not t.endswith(".dist-info")} == {"comsl"}
    assert declared == ["comsl"]
