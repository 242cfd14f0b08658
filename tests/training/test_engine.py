"""DeepSpeed ZeRO one-process runs and a two-process torchrun (gloo) run on the tiny task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comsl.config import OptimConfig, TrainConfig
from comsl.training.engine import deepspeed_config
from comsl.training.logging import read_metrics

from .tiny_task import N_TEXT, TinyModel, TinySampler, assert_same_run, fit, losses, run_script, trained_params

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"


def test_exact_resume_under_zero2_in_a_fresh_process(tmp_path):
    straight, _ = fit(tmp_path / "a", max_steps=8, engine="deepspeed", zero_stage=2)
    fit(tmp_path / "b", max_steps=8, stop_after=4, engine="deepspeed", zero_stage=2)
    assert run_script(tmp_path / "b", "--record", "--engine", "deepspeed", "--zero-stage", "2") == {
        "step": 8, "resumed_from": 4}
    assert_same_run(tmp_path / "a", tmp_path / "b", trained_params(straight))
    assert (tmp_path / "b" / "checkpoints" / "step_8" / "deepspeed").is_dir()


@pytest.mark.parametrize("stage", [1, 3])
def test_zero_stage_trains_checkpoints_and_resumes(tmp_path, stage):
    cfg = tmp_path / "ds.json"
    # Partition every parameter of the tiny model under ZeRO-3 (the default threshold keeps them whole).
    cfg.write_text(json.dumps({"zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}))
    kw = dict(max_steps=4, save_every=2, engine="deepspeed", deepspeed_config=str(cfg))
    straight, _ = fit(tmp_path / "a", **kw)
    _, half = fit(tmp_path / "b", stop_after=2, **kw)
    _, rest = fit(tmp_path / "b", **kw)
    assert (half.step, rest.resumed_from, rest.step) == (2, 2, 4)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    exported = TinyModel.from_pretrained(str(tmp_path / "b" / "final"))
    ref = TinyModel.from_pretrained(str(tmp_path / "a" / "final"))
    for k, v in exported.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    assert exported.speech[0].weight.shape == (16, 8)


def test_two_process_ddp_trains_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "ddp"
    assert run_script(out, "--stop-after", "4", "--record", "--mt-text", torchrun=True) == {"step": 4,
                                                                                         "resumed_from": None}
    ckpt4 = out / "checkpoints" / "step_4"
    assert (ckpt4 / "rank_0.pt").is_file() and (ckpt4 / "rank_1.pt").is_file()
    assert run_script(out, "--record", "--mt-text", torchrun=True) == {"step": 8, "resumed_from": 4}
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all(r["loss/total"] > 0 for r in records)
    ids = [json.loads(line)["ids"] for line in (out / "batches_rank0.jsonl").read_text().splitlines()]
    ids1 = [json.loads(line)["ids"] for line in (out / "batches_rank1.jsonl").read_text().splitlines()]
    assert len(ids) == len(ids1) == 8
    # The two ranks see different batches of the same steps.
    assert ids[0] != ids1[0]
    # The second stream (stage 2's extra MT text): each rank its own shard, continued across the resume.
    for rank in (0, 1):
        sampler = TinySampler(N_TEXT, 2, rank, 2)  # make_task's text sampler: seed + 1
        expected = [b for epoch in range(3) for b in (sampler.set_epoch(epoch), list(sampler))[1]][:8]
        lines = (out / f"batches_rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line)["mt_ids"] for line in lines] == [[f"txt{i}" for i in b] for b in expected]


def test_ddp_ranks_start_from_rank_0s_weights_and_stay_identical(tmp_path):
    """Rank 1 builds different weights; both ranks train rank 0's (in bf16: its float32 masters)."""
    out = tmp_path / "ddp"
    run_script(out, "--max-steps", "2", "--offset-init-by-rank", torchrun=True)
    ranks = [torch.load(out / f"final_params_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    assert (out / "final" / "model.safetensors").is_file()


def test_deepspeed_config_is_filled_from_ours():
    train = TrainConfig(engine="deepspeed", deepspeed_config=str(CONFIGS / "zero2_offload.json"),
                        grad_accum=4, precision="bf16", zero_stage=3)
    cfg = deepspeed_config(train, OptimConfig(max_grad_norm=0.5))
    assert cfg["train_micro_batch_size_per_gpu"] == 1 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"]["enabled"] is False
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["gradient_clipping"] == 0.5
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert "optimizer" not in cfg and "train_batch_size" not in cfg


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_deepspeed_configs_are_valid(path):
    from deepspeed.runtime.config import DeepSpeedConfig

    train = TrainConfig(engine="deepspeed", deepspeed_config=str(path))
    cfg = deepspeed_config(train, OptimConfig())
    parsed = DeepSpeedConfig(cfg)
    assert parsed.zero_optimization_stage == int(path.stem[4])
