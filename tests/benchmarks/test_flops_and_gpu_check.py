"""benchmarks/flops.py against torch's own FLOP counter, and benchmarks/gpu_check.py as a CPU smoke test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared training helpers

from common import bench_model, comsl_loss, covost_like, make_batch  # noqa: E402
from flops import comsl_step_flops  # noqa: E402

from comsl.config import ObjectiveConfig  # noqa: E402
from tests.helpers import transformers_warnings  # noqa: E402

ST_ONLY = ObjectiveConfig(w_asr=0.0, w_st=1.0, w_mt=0.0, w_cml=0.0, lambda_st=0.0, lambda_mt=0.0)


@pytest.mark.parametrize("cfg", [ObjectiveConfig(), ST_ONLY], ids=["full", "st_only"])
def test_counted_flops_match_torch_flop_counter(cfg):
    """Short sequences make attention (which torch's counter does not see on CPU) negligible, so the
    count from the shapes must match the matmuls torch actually ran, forward + backward + teacher."""
    model = bench_model(vocab=3000, speech_layers=2, text_layers=2).train()
    loss = comsl_loss(model, cfg)
    corpus = covost_like(2, seed=0)
    corpus.seconds[:] = 0.4
    corpus.transcript_len[:] = 12  # MTP masks 15% of these at random: its share of the count is tiny
    corpus.translation_len[:] = 12
    batch = make_batch(corpus, [0, 1], 3000)
    torch.manual_seed(0)
    # the fused LM head adds each chunk's weight gradient in place (addmm_), which the counter does not list
    def addmm_(_, a, b, *args, out_shape=None, **kwargs):
        return 2 * a[0] * a[1] * b[1]

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_}) as counter:
        total, _ = loss(model, batch)
        total.backward()
    counted = comsl_step_flops(model, batch, cfg)
    assert counted["total"] + counted["recompute"] == pytest.approx(counter.get_total_flops(), rel=0.03)  # measured 1.01 (full) and 1.02 (ST only); the teacher alone is 5%
    assert ("teacher" in counted) == (cfg.lambda_mt > 0)


def test_bench_model_config_raises_no_transformers_warning():
    with transformers_warnings() as caught:
        bench_model(vocab=300, d_speech=64, speech_layers=1, d_text=64, text_layers=1)
    assert caught == []


def test_gpu_check_runs_on_cpu_tiny(tmp_path):
    from training.tiny_task import clean_env  # without the process-group variables an in-process run left

    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--cpu", "--tiny", "--steps", "2",
                           "--out", str(tmp_path)], env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = dict(kv.split("=") for kv in proc.stdout.strip().splitlines()[-1].split())
    assert float(last["resume_rel_diff"]) == 0.0
    assert float(last["step_s"]) > 0 and float(last["model_tflops"]) > 0 and float(last["checkpoint_mib"]) > 0
    assert float(last["generate_s"]) > 0
    assert "[transformers]" not in proc.stdout + proc.stderr  # no log line of transformers
