"""A least-recently-used map bounded by the bytes of its values: every in-memory cache of comsl uses it,
so none grows with the corpus (decoded audio in ``SpeechDataset``, speech-encoder outputs)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable


def nbytes(value: Any) -> int:
    """Bytes held by a numpy array or torch tensor (``nbytes`` of either)."""
    n = getattr(value, "nbytes", None)
    if n is None:
        raise TypeError(f"ByteLRU stores arrays or tensors, got {type(value).__name__}")
    return int(n)


class ByteLRU:
    """``get``/``put`` map whose values' total size never exceeds ``max_bytes``.

    Putting a value evicts the least recently used ones until it fits; a value larger than the whole
    budget is not stored. ``max_bytes=0`` stores nothing (a cache that is off).
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.evictions = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> Any | None:
        """The value stored under ``key`` (now the most recently used), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key``, evicting the least recently used values to stay in budget."""
        size = nbytes(value)
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        if size > self.max_bytes:
            return
        while self.nbytes + size > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.nbytes -= evicted
            self.evictions += 1
        self._items[key] = (value, size)
        self.nbytes += size
