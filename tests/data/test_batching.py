import numpy as np
import pytest
import torch

from comsl.data.batching import (Collator, LengthBucketSampler, longest_first_batches, pack, pad_ids,
                                 padding_counts)
from comsl.data.features import WhisperLogMel
from comsl.errors import DataError

RNG = np.random.default_rng(0)
N = 500
TOKENS = RNG.integers(3, 60, size=N)
SAMPLES = RNG.integers(16000, 11 * 16000, size=N)


def _sampler(**kw):
    args = dict(max_tokens=400, max_frames=6000, seed=3)
    args.update(kw)
    return LengthBucketSampler(TOKENS, SAMPLES, **args)


def test_batches_respect_caps_cover_epoch_and_depend_on_seed_and_epoch():
    s = _sampler()
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(N))
    for b in batches:
        assert len(b) * TOKENS[b].max() <= 400 and len(b) * (SAMPLES[b] // 160).max() <= 6000
    assert list(_sampler()) == batches  # same seed, same batches
    assert list(_sampler(seed=4)) != batches
    assert s.epoch == 0 and list(s) != batches and s.epoch == 1  # the next epoch reshuffles
    # Bucketing: a batch's lengths are close (sorted, then packed).
    spread = np.mean([np.ptp(SAMPLES[b]) for b in batches if len(b) > 1])
    assert spread < 0.1 * np.ptp(SAMPLES)


def test_restored_state_continues_with_exactly_the_next_batches():
    s = _sampler(world_size=2, rank=1)
    it = iter(s)
    first = [next(it) for _ in range(5)]
    state = s.state_dict()
    rest = list(it)
    fresh = _sampler(world_size=2, rank=1)
    fresh.load_state_dict(state)
    fresh.set_epoch(0)  # a trainer calling set_epoch on the restored epoch keeps the position
    assert list(fresh) == rest and first + rest == s.rank_batches(0)
    assert fresh.state_dict() == {"epoch": 0, "position": len(first + rest), "seed": 3, "world_size": 2}
    assert next(iter(fresh)) == fresh.rank_batches(1)[0] and fresh.epoch == 1
    # consumed= overrides the position (a prefetching DataLoader runs ahead of training).
    again = _sampler(world_size=2, rank=1)
    again.load_state_dict(s.state_dict(consumed=2) | {"epoch": 0})
    assert list(again) == (first + rest)[2:]
    with pytest.raises(DataError, match="seed=3 but this run uses 9"):
        _sampler(seed=9).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_partition_the_epoch(world_size):
    per_rank = [list(_sampler(world_size=world_size, rank=r)) for r in range(world_size)]
    assert len({len(b) for b in per_rank}) == 1  # lockstep: same number of batches on every rank
    seen = [i for batches in per_rank for b in batches for i in b]
    assert sorted(seen) == list(range(N))  # nothing lost, nothing repeated


def test_tiny_data_repeats_at_most_world_size_minus_one_batches():
    s = [LengthBucketSampler([5], [16000], world_size=3, rank=r) for r in range(3)]
    assert [list(x) for x in s] == [[[0]], [[0]], [[0]]]


def test_text_only_sampler_caps_tokens():
    s = LengthBucketSampler(TOKENS, None, max_tokens=300, max_batch_size=8)
    batches = list(s)
    assert all(len(b) <= 8 and len(b) * TOKENS[b].max() <= 300 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(N))


BOXES = [(300, 20, 12), (300, 60, 6), (700, 30, 5), (700, 60, 4), (1100, 60, 2)]


def first_fit(frames, tokens, boxes):
    """Bucket of each item by the rule the sampler documents: the first box (sorted) holding both lengths."""
    boxes = sorted(boxes)
    return np.array([next(k for k, (f, t, _) in enumerate(boxes) if a <= f and b <= t)
                     for a, b in zip(frames, tokens)])


@pytest.mark.parametrize("seed", [0, 5])
def test_two_ranks_draw_each_step_from_the_same_bucket(seed):
    ranks = [LengthBucketSampler(TOKENS, SAMPLES, buckets=BOXES, seed=seed, rank=r, world_size=2) for r in (0, 1)]
    bucket = first_fit(SAMPLES // 160, TOKENS, BOXES)
    steps = [list(s) for s in ranks]
    assert len(steps[0]) == len(steps[1]) and len(steps[0]) > len(BOXES)
    for b0, b1 in zip(*steps):
        assert len(set(bucket[b0])) == 1 and set(bucket[b0]) == set(bucket[b1])  # one bucket per step
        assert not set(b0) & set(b1)
    seen = sorted(i for batches in steps for b in batches for i in b)
    assert seen == list(range(N))
    # Buckets are chosen in a seeded order, not one bucket after another.
    order = [int(bucket[b[0]]) for b in steps[0]]
    assert order != sorted(order)


def test_given_buckets_fix_batch_sizes_and_take_over_the_caps():
    s = LengthBucketSampler(TOKENS, SAMPLES, buckets=BOXES, max_tokens=1, max_frames=1, seed=1)
    bucket = first_fit(SAMPLES // 160, TOKENS, BOXES)
    sizes = sorted(BOXES)
    per_bucket: dict[int, list[int]] = {}
    for b in s:
        (k,) = set(bucket[b])
        per_bucket.setdefault(int(k), []).append(len(b))
    for k, lens in per_bucket.items():
        size, count = sizes[k][2], int((bucket == k).sum())
        assert sorted(lens, reverse=True) == [size] * (count // size) + ([count % size] if count % size else [])
    # Utterances beyond every bucket are batched one at a time.
    odd = LengthBucketSampler([5, 5, 90, 95, 5], [16000] * 5, buckets=[(200, 10, 8)], seed=0)
    assert sorted(sorted(b) for b in odd.epoch_batches(0)) == [[0, 1, 4], [2], [3]]


def skewed_lengths(n=3000, seed=0):
    """Speech frames gamma-distributed; tokens follow frames loosely with a heavy tail (translations of
    the same duration differ a lot in length)."""
    rng = np.random.default_rng(seed)
    frames = rng.gamma(3.0, 120.0, n).clip(50, 1100).astype(np.int64)
    tokens = (frames / 12 * rng.lognormal(0.0, 0.5, n)).clip(3, 250).astype(np.int64)
    return frames, tokens


def token_padding(batches, tokens):
    return sum(len(b) * tokens[b].max() for b in batches) / sum(tokens[b].sum() for b in batches)


def test_2d_buckets_pad_fewer_tokens_than_1d():
    frames, tokens = skewed_lengths()
    kw = dict(max_frames=8000, max_tokens=1500, num_buckets=10, seed=0)
    one_d = LengthBucketSampler(tokens, frames * 160, num_token_buckets=1, **kw)
    two_d = LengthBucketSampler(tokens, frames * 160, num_token_buckets=4, **kw)
    ratio_1d, ratio_2d = (token_padding(s.epoch_batches(0), tokens) for s in (one_d, two_d))
    assert ratio_2d < 0.8 * ratio_1d
    assert two_d.padding_ratios(0)["tokens"] == pytest.approx(ratio_2d)
    # Speech padding stays small: each bucket is still packed in length order.
    assert one_d.padding_ratios(0)["frames"] < 1.05 and two_d.padding_ratios(0)["frames"] < 1.05


def test_small_data_is_not_cut_into_tiny_buckets():
    frames, tokens = skewed_lengths(n=40)
    kw = dict(max_frames=4000, max_tokens=1024, seed=0)
    one = LengthBucketSampler(tokens, frames * 160, num_buckets=1, num_token_buckets=1, **kw)
    default = LengthBucketSampler(tokens, frames * 160, **kw)
    assert len(default.epoch_batches(0)) <= len(one.epoch_batches(0)) + 1


def test_pack_and_longest_first_batches():
    durations = [1.0, 5.0, 2.0, 2.0, 9.0, 0.5, 30.0]
    # sorted: 30 | 9 | 5+2 (2 x 5 <= 10) | 2+1+0.5 (3 x 2 <= 10, at most 3): worked out by hand
    assert longest_first_batches(durations, max_frames=10.0, max_batch_size=3) == [[6], [4], [1, 2], [3, 0, 5]]
    assert longest_first_batches([1.0] * 6, max_frames=100.0, max_batch_size=64,
                                 keys=["fr", "de", "fr", "de", "fr", "ja"]) == [[0, 2, 4], [1, 3], [5]]
    tokens = np.array([4, 9, 3])
    assert pack([0, 1, 2], None, tokens, max_tokens=18) == [[0, 1], [2]]  # 2 x 9 <= 18, then 3 x 9 > 18


def test_padding_counts_from_masks():
    batch = {"speech_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]), "transcript_mask": torch.tensor([[1, 1], [1, 0]]),
             "translation_mask": torch.tensor([[1, 1, 1, 1]])}
    assert padding_counts(batch) == {"frames": (6, 4), "tokens": (8, 7)}
    assert padding_counts({"transcript_mask": torch.ones(2, 3)}) == {"tokens": (6, 6)}


def test_padding_counts_of_the_mt_pass_with_extra_text():
    """``mt_tokens``: the batch's 2 rows and the extra row padded together, as the MT pass runs them."""
    from comsl.models.encodings import mt_rows

    batch = {"transcript_mask": torch.tensor([[1, 1], [1, 0]]), "translation_mask": torch.tensor([[1, 1, 1, 1]] * 2)}
    batch["mt_extra"] = {"transcript_mask": torch.tensor([[1, 1, 1]]), "translation_mask": torch.tensor([[1, 1]])}
    for part in (batch, batch["mt_extra"]):
        part.update({k.replace("_mask", "_ids"): m.clone() for k, m in list(part.items()) if k.endswith("_mask")})
    counts = padding_counts(batch)
    assert counts["tokens"] == (12, 11)  # the speech batch's own text, as without extra rows
    assert counts["mt_tokens"] == (3 * 3 + 3 * 4, 3 + 3 + 8 + 2)
    _, src_mask, _, tgt_mask = mt_rows(batch, pad_id=0)
    assert counts["mt_tokens"] == (src_mask.numel() + tgt_mask.numel(), int(src_mask.sum() + tgt_mask.sum()))


def test_collator_pads_text_and_computes_features():
    items = [
        {"id": "a", "src_lang": "fr", "src_lang_id": 7, "transcript_ids": [7, 10, 11, 2],
         "translation_ids": [5, 12, 2], "audio": np.ones(3200, np.float32) * 0.1},
        None,
        {"id": "b", "src_lang": "de", "src_lang_id": 8, "transcript_ids": [8, 2],
         "translation_ids": [5, 13, 14, 15, 2], "audio": np.ones(1600, np.float32) * 0.1},
    ]
    batch = Collator(pad_id=1, frontend=WhisperLogMel(80))(items)
    assert batch["ids"] == ["a", "b"] and batch["src_langs"] == ["fr", "de"]
    assert batch["src_lang_ids"].tolist() == [7, 8]
    assert batch["transcript_ids"].tolist() == [[7, 10, 11, 2], [8, 2, 1, 1]]
    assert batch["translation_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["speech"].shape == (2, 80, 20) and batch["speech_mask"].sum(1).tolist() == [20, 10]
    text = Collator(pad_id=1)([items[0]])
    assert "speech" not in text and text["transcript_ids"].dtype == torch.long
    assert Collator(pad_id=1)([None]) is None
    assert pad_ids([], 1)[0].shape == (0, 0)


def test_bucket_config_keys_load_and_are_checked(tmp_path):
    from comsl.config import BucketConfig, load_config
    from comsl.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train_manifest: x.tsv\n  buckets:\n  - {max_frames: 300, max_tokens: 20, batch_size: 12}\n")
    assert load_config(cfg).data.buckets == [BucketConfig(max_frames=300, max_tokens=20, batch_size=12)]
    with pytest.raises(ConfigError) as err:
        load_config(cfg, ["data.buckets=[{max_frames: 300, max_tokens: 0, batch_size: 0}]", "data.num_buckets=0"])
    for line in ("data.buckets[0].batch_size: must be >= 1, got 0", "data.buckets[0].max_tokens: must be >= 1",
                 "data.num_buckets: must be >= 1"):
        assert line in str(err.value)
    with pytest.raises(ConfigError, match=r"data.buckets\[0\].batch: unknown key"):
        load_config(cfg, ["data.buckets=[{max_frames: 300, batch: 4}]"])
