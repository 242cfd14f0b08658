"""The byte-bounded LRU every comsl cache uses."""

import numpy as np
import pytest

from comsl.lru import ByteLRU


def test_evicts_least_recently_used_and_never_exceeds_budget():
    lru = ByteLRU(max_bytes=300)
    for key in "abc":
        lru.put(key, np.zeros(100, dtype=np.uint8))
    assert lru.get("a") is not None  # a is now the most recent: b goes first
    lru.put("d", np.zeros(100, dtype=np.uint8))
    assert "b" not in lru and all(k in lru for k in "acd")
    assert lru.nbytes == 300 and lru.evictions == 1
    lru.put("e", np.zeros(250, dtype=np.uint8))
    assert list(k for k in "acde" if k in lru) == ["e"] and lru.nbytes == 250


def test_replacing_a_key_and_oversized_values():
    lru = ByteLRU(max_bytes=100)
    lru.put("a", np.zeros(60, dtype=np.uint8))
    lru.put("a", np.zeros(80, dtype=np.uint8))
    assert lru.nbytes == 80 and len(lru) == 1
    lru.put("a", np.zeros(101, dtype=np.uint8))  # larger than the budget: not stored, old value dropped
    assert lru.nbytes == 0 and lru.get("a") is None
    off = ByteLRU(0)
    off.put("x", np.zeros(1, dtype=np.uint8))
    assert len(off) == 0
    with pytest.raises(ValueError):
        ByteLRU(-1)
