"""benchmarks/scale.py as a smoke test: a small corpus through comsl's data path and the ST objective."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_scale_benchmark_trains_on_every_clip_and_prints_its_summary(tmp_path):
    # run from another directory: the manifest's clip paths must not depend on the working directory
    out = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--steps", "12", "--rows", "400", "--clips", "6",
                          "--workers", "1", "--out", str(tmp_path / "scale")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipping utterance" not in out.stderr + out.stdout  # every clip decodes
    summary = dict(kv.split("=") for kv in out.stdout.strip().splitlines()[-1].split())
    assert set(summary) == {"rss_growth", "loader_vs_model"}
    assert float(summary["loader_vs_model"]) > 0 and float(summary["rss_growth"]) >= 0
