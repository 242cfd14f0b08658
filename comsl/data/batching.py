"""Length-bucketed dynamic batching with a resumable, rank-sharded sampler, and the batch collator.

Batch dict (see the team spec): ``ids``, ``src_langs``, ``speech`` (B, n_mels, T) for Whisper log-mel,
(B, S) for waveform encoders, (B, T, 160) for w2v-BERT fbank, ``speech_mask`` (B, T) / (B, S),
``src_lang_ids`` (B,), ``transcript_ids``/``transcript_mask`` (B, Ls), ``translation_ids``/
``translation_mask`` (B, Lt). Text-only batches have no ``speech*`` keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from comsl.data.processor import extract_features
from comsl.errors import DataError

FRAME_SAMPLES = 160  # one 10 ms feature frame at 16 kHz: the unit of the audio cap


class LengthBucketSampler:
    """Yields lists of dataset indices: batches of similar length, capped in padded size.

    A batch of B items with longest audio A (10 ms frames) and longest text L (tokens) satisfies
    B * A <= max_frames and B * L <= max_tokens (and B <= max_batch_size); an item too large for
    any cap alone forms its own batch. Per epoch: items are sorted by length with seeded random
    tie-breaks, packed greedily, and the batches shuffled, all from (seed, epoch) only.

    Sharding: rank r takes batches r, r + W, ... of the epoch. When the count is not a multiple
    of W, the largest multi-item batches are split in two until it is, so no utterance is lost or
    repeated and every rank gets the same number of batches; only when too few batches can be
    split (tiny data) are up to W - 1 batches repeated.

    Resuming: ``state_dict()`` holds the epoch and the position inside it; after
    ``load_state_dict`` iteration continues with exactly the next batches. A new iteration after an
    epoch's last batch starts the next epoch. With a prefetching DataLoader the sampler runs ahead of
    training; pass the number of batches actually consumed to ``state_dict(consumed=...)``.
    """

    def __init__(self, token_lengths: Sequence[int], audio_lengths: Sequence[int] | None = None, *,
                 max_tokens: int = 4096, max_frames: int = 100 * 200, max_batch_size: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if not 0 <= rank < world_size:
            raise DataError(f"LengthBucketSampler: rank {rank} outside world_size {world_size}")
        self.token_lengths = np.asarray(token_lengths, dtype=np.int64)
        # Audio lengths arrive in samples; batching works in 10 ms frames.
        self.audio_frames = (None if audio_lengths is None
                             else np.asarray(audio_lengths, dtype=np.int64) // FRAME_SAMPLES)
        if self.audio_frames is not None and len(self.audio_frames) != len(self.token_lengths):
            raise DataError(f"LengthBucketSampler: {len(self.audio_frames)} audio lengths but "
                            f"{len(self.token_lengths)} token lengths")
        self.max_tokens = max_tokens
        self.max_frames = max_frames
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0  # batches of this rank already yielded in the current epoch
        self._cache: tuple[int, list[list[int]]] | None = None

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        batches, cur, max_a, max_t = [], [], 0, 0
        for i in order.tolist():
            a = int(self.audio_frames[i]) if self.audio_frames is not None else 0
            t = int(self.token_lengths[i])
            n = len(cur) + 1
            fits = (n * max(max_t, t) <= self.max_tokens and n * max(max_a, a) <= self.max_frames
                    and (self.max_batch_size is None or n <= self.max_batch_size))
            if cur and not fits:
                batches.append(cur)
                cur, max_a, max_t = [], 0, 0
            cur.append(i)
            max_a, max_t = max(max_a, a), max(max_t, t)
        if cur:
            batches.append(cur)
        return batches

    def _balance(self, batches: list[list[int]]) -> list[list[int]]:
        w = self.world_size
        while len(batches) % w:
            splittable = [k for k, b in enumerate(batches) if len(b) > 1]
            if not splittable:
                break
            k = max(splittable, key=lambda k: (len(batches[k]), -k))
            b = batches.pop(k)
            batches[k:k] = [b[: len(b) // 2], b[len(b) // 2:]]
        short = (-len(batches)) % w if batches else 0
        # Repeats only when nothing could be split (fewer multi-item batches than ranks).
        return batches + [batches[k % len(batches)] for k in range(short)]

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (every rank's), in order; rank r gets items r::world_size."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.token_lengths)
        tie = rng.permutation(n) if self.shuffle else np.arange(n)
        length = self.audio_frames if self.audio_frames is not None else self.token_lengths
        # Sort by length, then by token length, ties broken by the seeded permutation.
        order = np.lexsort((tie, self.token_lengths, length))
        batches = self._pack(order)
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        batches = self._balance(batches)
        self._cache = (epoch, batches)
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch``."""
        return self.epoch_batches(epoch)[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        if self.position > 0 and self.position >= len(self.rank_batches()):
            # The previous epoch was finished: move on only now, so a state saved after its last
            # batch still names that epoch (and ``consumed`` counts stay consistent).
            self.epoch, self.position = self.epoch + 1, 0
        batches = self.rank_batches()
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning; a no-op when already in it (keeps a restored position)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self, consumed: int | None = None) -> dict:
        """Epoch and position; ``consumed`` overrides the position (batches trained on this epoch)."""
        return {"epoch": self.epoch, "position": self.position if consumed is None else consumed,
                "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state. Raises DataError when seed or world size differ."""
        for key in ("seed", "world_size"):
            if state[key] != getattr(self, key):
                raise DataError(f"sampler state has {key}={state[key]} but this run uses "
                                f"{getattr(self, key)}; batches would not continue exactly")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists -> ids (B, L) long and mask (B, L) long."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class Collator:
    """Items -> batch dict. ``frontend`` (see comsl.data.features.build_frontend) runs batched here;
    None makes text-only batches. Items that are None (failed decodes) are dropped; if every item
    of a batch failed the result is None and the trainer skips it.
    """

    def __init__(self, pad_id: int, frontend: nn.Module | None = None):
        self.pad_id = pad_id
        self.frontend = frontend

    def __call__(self, items: Sequence[dict | None]) -> dict | None:
        items = [it for it in items if it is not None]
        if not items:
            return None
        batch = {
            "ids": [it["id"] for it in items],
            "src_langs": [it["src_lang"] for it in items],
            "src_lang_ids": torch.tensor([it["src_lang_id"] for it in items], dtype=torch.long),
        }
        batch["transcript_ids"], batch["transcript_mask"] = pad_ids([it["transcript_ids"] for it in items], self.pad_id)
        batch["translation_ids"], batch["translation_mask"] = pad_ids([it["translation_ids"] for it in items], self.pad_id)
        if self.frontend is not None:
            batch["speech"], batch["speech_mask"] = extract_features(self.frontend, [it["audio"] for it in items])
        return batch
