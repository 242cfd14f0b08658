"""`comsl tune-batches`: the size search, and the command on the tiny config that a following `comsl train` uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from comsl.cli import main
from comsl.training.batch_tuning import largest_batch

from .tiny_task import ROOT, TINY, build_corpus, corpus_paths

# Stage 2 without the teacher (no stage-1 model needed) and caps small enough that the tiny corpus
# fills a few buckets.
STAGE2 = ["train.init_from=null", "train.teacher=null", "objectives.lambda_mt=0.0", "data.max_frames_per_batch=400",
          "data.num_buckets=2", "data.num_token_buckets=1", "train.cache_frozen_speech=false"]


def linear_memory(base: int, per_item: int, oom_above: int | None = None):
    """A fake step: peak = base + per_item x n, out of memory beyond ``oom_above``; records the sizes tried."""
    tried = []

    def step(n: int) -> int | None:
        tried.append(n)
        return None if oom_above is not None and n > oom_above else base + per_item * n

    return step, tried


def test_largest_batch_is_the_largest_size_under_the_budget():
    step, tried = linear_memory(100, 7)
    # budget admits floor((194 - 100) / 7) = 13 items; below 16 the bisection is exact
    assert largest_batch(step, budget=194, limit=512) == (13, 100 + 7 * 13)
    assert tried[:5] == [1, 2, 4, 8, 16]
    step, _ = linear_memory(0, 1)
    size, peak = largest_batch(step, budget=1000, limit=4096)
    assert 1000 - 1000 // 8 <= size <= 1000 and peak == size  # bisected to within 1/8
    step, tried = linear_memory(0, 1, oom_above=37)
    assert 37 - 37 // 8 <= largest_batch(step, budget=10**9, limit=512)[0] <= 37
    step, tried = linear_memory(0, 1)
    assert largest_batch(step, budget=10**9, limit=20) == (20, 20) and max(tried) == 20
    step, _ = linear_memory(500, 1)
    assert largest_batch(step, budget=100, limit=8) == (0, 501)  # not even one utterance
    step, _ = linear_memory(0, 1, oom_above=0)
    assert largest_batch(step, budget=100, limit=8) == (0, None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"), langs="fr", per_lang=18)


def test_tune_batches_writes_bucket_sizes_that_train_uses(corpus, tmp_path, capsys):
    from comsl.config import load_config
    from comsl.data.batching import padding_counts
    from comsl.training.logging import read_metrics
    from comsl.training.task import build_task

    config = ROOT / "configs/mini_tiny.yaml"
    overrides = [*TINY, *corpus_paths(corpus, tmp_path / "run"), *STAGE2]
    tuned = tmp_path / "tuned.yaml"
    assert main(["tune-batches", str(config), *overrides, "--max-batch-size", "2", "--out", str(tuned)]) == 0
    out = capsys.readouterr().out
    assert "padded/real" in out and "frames" in out and "tokens" in out
    buckets = yaml.safe_load(tuned.read_text())["data"]["buckets"]
    assert len(buckets) >= 2 and all(b["batch_size"] == 2 for b in buckets)  # the default budget holds 2

    cfg = load_config(tuned)
    task = build_task(cfg)
    assert [tuple(b) for b in task.sampler.buckets] == [(b["max_frames"], b["max_tokens"], 2) for b in buckets]
    sizes = [len(b) for b in task.sampler.epoch_batches(0)]
    # fixed batch sizes: pairs, where the caps alone (400 frames) allow one utterance of 2 s or more
    assert max(sizes) == 2 and sizes.count(2) >= len(sizes) - len(buckets)

    assert main(["train", str(tuned), "train.max_steps=2", "data.dev_manifest=null", "train.save_every=2"]) == 0
    first = task.collate_fn([task.dataset[i] for i in task.sampler.epoch_batches(0)[0]])
    record = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["step"] == 1)
    for name, (padded, real) in padding_counts(first).items():
        assert math.isclose(record[f"pad_ratio/{name}"], padded / real)
    assert {"pad_ratio/frames", "pad_ratio/tokens"} <= set(record)


def test_probe_steps_carry_the_largest_extra_mt_text_batch(corpus, tmp_path):
    """With data.mt_manifest the probed step also runs the MT task's extra rows: its longest pair, as many
    rows as data.mt_tokens_per_batch allows."""
    from comsl.config import load_config
    from comsl.data.manifest import read_manifest, write_manifest
    from comsl.training.batch_tuning import PeakMemory, _probe_step
    from comsl.training.task import build_task

    text = tmp_path / "text_train.tsv"
    rows = read_manifest(corpus / "manifests" / "train.tsv")
    write_manifest(text, [{**r, "id": f"text_{r['id']}", "audio": "-"} for r in rows])
    cfg = load_config(ROOT / "configs/mini_tiny.yaml", [*TINY, *corpus_paths(corpus, tmp_path / "run"), *STAGE2,
                                                       f"data.mt_manifest={text}", "data.mt_tokens_per_batch=100"])
    task = build_task(cfg)
    longest = int(task.mt_text.sampler.token_lengths.max())
    seen = []

    class Recorder:  # the engine's calls, without training
        def prepare(self, batch):
            return batch

        def forward(self, batch, last_micro):
            seen.append(batch)
            return torch.zeros(()), {}

        def backward(self, total):
            pass

        def step(self):
            return True

    step = _probe_step(Recorder(), task, PeakMemory(torch.device("cpu")), speech=True)
    bucket = task.sampler.buckets[0]
    assert step(bucket, int(np.flatnonzero(task.sampler.item_bucket == 0)[0]), 2) is not None
    extra = seen[0]["mt_extra"]
    assert extra["translation_ids"].shape == (100 // longest, longest)
    assert extra["transcript_mask"].all() and seen[0]["translation_ids"].shape[0] == 2


def test_tune_batches_budget_below_one_utterance_is_a_clear_error(corpus, tmp_path, capsys):
    config = ROOT / "configs/mini_tiny.yaml"
    overrides = [*TINY, *corpus_paths(corpus, tmp_path / "run"), *STAGE2]
    assert main(["tune-batches", str(config), *overrides, "--memory-budget", "0.001", "--out",
                 str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err
    assert "one utterance needs" in err and "over the budget of 0.00 GiB; raise --memory-budget" in err
    assert not (tmp_path / "t.yaml").exists()


def test_cpu_peak_memory_sees_an_allocation_and_forgets_it_after_reset():
    import torch

    from comsl.training.batch_tuning import PeakMemory

    meter = PeakMemory(torch.device("cpu"))
    meter.reset()
    if not meter.resettable:
        pytest.skip("this kernel cannot reset the peak resident set (/proc/self/clear_refs)")
    before = meter.peak()
    block = torch.ones(200 * 2**20 // 4)  # 200 MiB, every page touched
    del block
    grown = meter.peak() - before
    meter.reset()
    assert grown >= 190 * 2**20 and meter.peak() - before < grown / 2
