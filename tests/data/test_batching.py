import numpy as np
import pytest
import torch

from comsl.data.batching import Collator, LengthBucketSampler, pad_ids
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
