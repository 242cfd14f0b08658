"""Length-bucketed dynamic batching with a resumable, rank-sharded sampler, and the batch collator.

Batch dict (see the team spec): ``ids``, ``src_langs``, ``speech`` (B, n_mels, T) for Whisper log-mel,
(B, S) for waveform encoders, (B, T, 160) for w2v-BERT fbank, ``speech_mask`` (B, T) / (B, S),
``src_lang_ids`` (B,), ``transcript_ids``/``transcript_mask`` (B, Ls), ``translation_ids``/
``translation_mask`` (B, Lt). Text-only batches have no ``speech*`` keys.

One length batcher serves training and decoding: :func:`pack` fills batches from an ordered list of
items under the padded-size caps; :class:`LengthBucketSampler` orders and shards training items in 2D
buckets (speech frames x target tokens), :func:`longest_first_batches` orders items for decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from comsl.data.processor import extract_features
from comsl.errors import DataError

log = logging.getLogger(__name__)

FRAME_SAMPLES = 160  # one 10 ms feature frame at 16 kHz: the unit of the audio cap
FRAMES_PER_SECOND = 100
MIN_BATCHES_PER_BUCKET = 4
"""Estimated buckets hold at least this many batches per rank, so each bucket's one partly filled batch
(and the splits that give every rank the same count) cost little."""


class Bucket(NamedTuple):
    """Items with speech frames <= ``max_frames`` and tokens <= ``max_tokens`` (the first such bucket in
    sorted order), batched ``batch_size`` at a time; ``batch_size`` None: filled to the padded-size caps."""

    max_frames: int
    max_tokens: int
    batch_size: int | None


def pack(order: Sequence[int], frames: np.ndarray | None, tokens: np.ndarray | None, *,
         max_frames: float | None = None, max_tokens: float | None = None,
         max_batch_size: int | None = None) -> list[list[int]]:
    """Items in ``order`` cut greedily into consecutive batches: a batch of B items with longest audio A
    and longest text L keeps B * A <= max_frames, B * L <= max_tokens and B <= max_batch_size (a cap
    of None does not apply); an item too large for a cap alone forms its own batch."""
    batches, cur, max_a, max_t = [], [], 0, 0
    for i in order:
        a = frames[i] if frames is not None else 0
        t = tokens[i] if tokens is not None else 0
        n = len(cur) + 1
        fits = ((max_tokens is None or n * max(max_t, t) <= max_tokens)
                and (max_frames is None or n * max(max_a, a) <= max_frames)
                and (max_batch_size is None or n <= max_batch_size))
        if cur and not fits:
            batches.append(cur)
            cur, max_a, max_t = [], 0, 0
        cur.append(int(i))
        max_a, max_t = max(max_a, a), max(max_t, t)
    if cur:
        batches.append(cur)
    return batches


def longest_first_batches(frames: Sequence[float], *, max_frames: float, max_batch_size: int | None = None,
                          keys: Sequence[str] | None = None) -> list[list[int]]:
    """Deterministic batches for decoding: items longest first (ties by position), :func:`pack`-ed
    under ``max_frames`` and ``max_batch_size``; with ``keys`` a batch holds one key only (keys in
    the order their longest item comes). Every index appears exactly once."""
    lengths = np.asarray(frames, dtype=np.float64)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(keys[i] if keys is not None else "", []).append(i)
    return [b for members in groups.values()
            for b in pack(members, lengths, None, max_frames=max_frames, max_batch_size=max_batch_size)]


def _row_edges(lengths: np.ndarray, rows: int) -> np.ndarray:
    """Upper edges of ``rows`` length ranges holding similar total length (as lhotse's
    ``estimate_duration_buckets``), ascending and distinct."""
    ordered = np.sort(lengths)
    cum = np.cumsum(ordered)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, rows) / rows, side="left")
    return np.unique(np.append(ordered[cuts], ordered[-1]))


def estimate_buckets(frames: np.ndarray | None, tokens: np.ndarray, *, num_buckets: int,
                     num_token_buckets: int, max_buckets: int | None = None) -> list[tuple[int, int]]:
    """Bucket boxes ``(max_frames, max_tokens)`` in sorted order: ``num_buckets`` speech-length rows of
    similar total length, each cut into ``num_token_buckets`` token ranges holding similar numbers of
    items (2D buckets). Text-only (``frames`` None): rows along tokens, ``max_frames`` 0. At most
    ``max_buckets`` boxes, rows given up first: the sampler packs each bucket in speech-length order,
    so token ranges cut padding more (rows matter for per-bucket batch sizes, which fit a bucket's
    longest utterance)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if not len(tokens):
        return []
    limit = max(1, max_buckets if max_buckets is not None else num_buckets * num_token_buckets)
    if frames is None:
        return [(0, int(t)) for t in _row_edges(tokens, max(1, min(num_buckets, limit)))]
    frames = np.asarray(frames, dtype=np.int64)
    cols = max(1, min(num_token_buckets, limit))
    rows = max(1, min(num_buckets, limit // cols))
    boxes, low = [], -1
    for edge in _row_edges(frames, rows):
        row_tokens = tokens[(frames > low) & (frames <= edge)]
        low = edge
        qs = np.quantile(row_tokens, np.arange(1, cols + 1) / cols, method="higher")
        boxes += [(int(edge), int(t)) for t in np.unique(qs)]
    return boxes


class LengthBucketSampler:
    """Yields lists of dataset indices: batches of one 2D length bucket (speech frames x target tokens),
    every rank drawing from the same bucket at every step.

    Buckets: given (``buckets``, e.g. written by ``comsl tune-batches``: each with its batch size), or
    estimated from the lengths (:func:`estimate_buckets`), then filled under the padded-size caps: a
    batch of B items with longest audio A (10 ms frames) and longest text L keeps B * A <= max_frames
    and B * L <= max_tokens (and B <= max_batch_size); an item too large for any cap alone forms its own
    batch. An item belongs to the first bucket (sorted) that holds both its lengths; items beyond every
    given bucket go one per batch into an extra bucket (logged).

    Per epoch, from (seed, epoch) only: inside each bucket items are sorted by length with seeded random
    tie-breaks and packed (:func:`pack`); the bucket's batches are made a multiple of ``world_size`` by
    splitting its largest multi-item batches (only where nothing is left to split, up to W - 1 of its
    items are repeated) and cut into steps of W consecutive batches; the steps of all buckets are
    shuffled. Rank r takes batch r of every step (batches r, r + W, ... of the epoch): at each step all
    ranks hold batches of the same bucket, disjoint, and every rank gets the same number of batches.

    Resuming: ``state_dict()`` holds the epoch and the position inside it; after
    ``load_state_dict`` iteration continues with exactly the next batches. A new iteration after an
    epoch's last batch starts the next epoch. With a prefetching DataLoader the sampler runs ahead of
    training; pass the number of batches actually consumed to ``state_dict(consumed=...)``.
    """

    def __init__(self, token_lengths: Sequence[int], audio_lengths: Sequence[int] | None = None, *,
                 max_tokens: int = 4096, max_frames: int = 100 * 200, max_batch_size: int | None = None,
                 buckets: Sequence[tuple[int, int, int]] | None = None, num_buckets: int = 10,
                 num_token_buckets: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
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
        if buckets:
            self.buckets = sorted(Bucket(*b) for b in buckets)
        else:
            boxes = estimate_buckets(self.audio_frames, self.token_lengths, num_buckets=num_buckets,
                                     num_token_buckets=num_token_buckets, max_buckets=self._max_buckets())
            self.buckets = [Bucket(f, t, None) for f, t in boxes]
        self.item_bucket = self._assign()
        """(N,) index into ``buckets`` of every item."""

    def _max_buckets(self) -> int:
        """How many estimated buckets the data fills with MIN_BATCHES_PER_BUCKET batches per rank each."""
        batches = self.token_lengths.sum() / max(self.max_tokens, 1)
        if self.audio_frames is not None:
            batches = max(batches, self.audio_frames.sum() / max(self.max_frames, 1))
        return max(1, int(batches // (MIN_BATCHES_PER_BUCKET * self.world_size)))

    def _assign(self) -> np.ndarray:
        frames = self.audio_frames if self.audio_frames is not None else np.zeros_like(self.token_lengths)
        which = np.full(len(self.token_lengths), -1, dtype=np.int64)
        for k, b in enumerate(self.buckets):
            which[(which < 0) & (frames <= b.max_frames) & (self.token_lengths <= b.max_tokens)] = k
        beyond = which < 0
        if beyond.any():
            log.warning("%d utterances are longer than every bucket (up to %d frames, %d tokens): batched one "
                        "at a time; rerun `comsl tune-batches` on this data", int(beyond.sum()),
                        self.buckets[-1].max_frames, self.buckets[-1].max_tokens)
            self.buckets.append(Bucket(int(frames[beyond].max()), int(self.token_lengths[beyond].max()), 1))
            which[beyond] = len(self.buckets) - 1
        return which

    def _bucket_batches(self, k: int, tie: np.ndarray) -> list[list[int]]:
        """Bucket ``k``'s batches of an epoch (``tie``: that epoch's tie-break permutation), in length order."""
        members = np.flatnonzero(self.item_bucket == k)
        length = self.audio_frames if self.audio_frames is not None else self.token_lengths
        order = members[np.lexsort((tie[members], self.token_lengths[members], length[members]))]
        b = self.buckets[k]
        if b.batch_size is not None:
            return pack(order, None, None, max_batch_size=b.batch_size)
        return pack(order, self.audio_frames, self.token_lengths, max_frames=self.max_frames,
                    max_tokens=self.max_tokens, max_batch_size=self.max_batch_size)

    def _balance(self, batches: list[list[int]]) -> list[list[int]]:
        """Split the largest multi-item batches until the count is a multiple of W; else repeat items."""
        w = self.world_size
        while len(batches) % w:
            splittable = [k for k, b in enumerate(batches) if len(b) > 1]
            if not splittable:
                break
            k = max(splittable, key=lambda k: (len(batches[k]), -k))
            b = batches.pop(k)
            batches[k:k] = [b[: len(b) // 2], b[len(b) // 2:]]
        # Repeats only when nothing could be split (fewer items in the bucket than ranks).
        short = (-len(batches)) % w
        return batches + [batches[k % len(batches)] for k in range(short)]

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (every rank's), in order; rank r gets items r::world_size."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.token_lengths)
        tie = rng.permutation(n) if self.shuffle else np.arange(n)
        w = self.world_size
        steps = []
        for k in range(len(self.buckets)):
            batches = self._balance(self._bucket_batches(k, tie))
            steps += [batches[s:s + w] for s in range(0, len(batches), w)]
        if self.shuffle:
            steps = [steps[k] for k in rng.permutation(len(steps))]
        batches = [b for step in steps for b in step]
        self._cache = (epoch, batches)
        return batches

    def padding_ratios(self, epoch: int | None = None) -> dict[str, float]:
        """Padded / real speech frames and tokens over ``epoch``'s batches (1.0 = no padding); tokens are
        each item's longer text. ``frames`` only with audio lengths."""
        dims = {"frames": self.audio_frames, "tokens": self.token_lengths}
        out = {}
        for name, lengths in dims.items():
            if lengths is None:
                continue
            padded = sum(len(b) * int(lengths[b].max()) for b in self.epoch_batches(epoch))
            real = sum(int(lengths[b].sum()) for b in self.epoch_batches(epoch))
            out[name] = padded / max(real, 1)
        return out

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


def padding_counts(batch: dict) -> dict[str, tuple[int, int]]:
    """``{"frames": (padded, real), "tokens": (padded, real)}`` of a collated batch, from its masks
    (speech frames or samples; transcript and translation tokens together); a missing part is left out.
    With extra MT text (``mt_extra``) also ``mt_tokens``: the MT pass's input, the batch's rows and the
    extra rows padded together to the longest (as ``comsl.models.encodings`` runs them)."""
    out = {}
    if batch.get("speech_mask") is not None:
        out["frames"] = (batch["speech_mask"].numel(), int(batch["speech_mask"].sum()))
    keys = ("transcript_mask", "translation_mask")
    masks = [batch[k] for k in keys if batch.get(k) is not None]
    if masks:
        out["tokens"] = (sum(m.numel() for m in masks), sum(int(m.sum()) for m in masks))
    extra = batch.get("mt_extra")
    pairs = [(batch[k], extra[k]) for k in keys if extra is not None and k in batch and k in extra]
    if pairs:
        out["mt_tokens"] = (sum((a.shape[0] + b.shape[0]) * max(a.shape[1], b.shape[1]) for a, b in pairs),
                            sum(int(a.sum()) + int(b.sum()) for a, b in pairs))
    return out


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
