"""The train/dev/test split of the mini corpus, decided once per English sentence for every source and
language, so no dev or test reference (nor a near-copy of it) is ever a training target.

Near-copies are clustered: a word-set Jaccard of at least ``jaccard`` (so sentences that differ only in
case, punctuation or whitespace, Jaccard 1, always), or the same first ``prefix_words`` words; whole
clusters go to one split. Dev and test take small clusters, in an order fixed by the seed, until every language has
enough candidates for its dev/test clips; everything else is train.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from mini.catalogs import _stable_int

SPLITS = ("train", "dev", "test")
HELD_OUT_MAX_CLUSTER = 4
"""A larger cluster (a family of similar messages) always goes to train, where its text is used."""


def words(s: str) -> list[str]:
    """Lower-cased words of a sentence (letters and digits only)."""
    return re.findall(r"\w+", s.casefold())


def normalise(s: str) -> str:
    """A sentence without case, punctuation or extra whitespace: two sentences that differ only in
    those are near-copies."""
    return " ".join(words(s))


def cluster_sentences(sentences: list[str], jaccard: float = 0.6, prefix_words: int = 4) -> list[list[str]]:
    """Group near-duplicates (see module doc). Returns clusters, sorted, deterministic.

    Jaccard pairs are found by prefix filtering: two word sets with Jaccard >= t share a word among
    the first ``|A| - ceil(t |A|) + 1`` of each set's words in rarest-first order, so only pairs
    sharing such a word are compared (exact, and far below the all-pairs cost)."""
    sentences = sorted(set(sentences))
    parent = list(range(len(sentences)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    toks = [words(s) for s in sentences]
    first: dict[tuple[str, ...], int] = {}
    for i, w in enumerate(toks):
        if len(w) > prefix_words:
            union(i, first.setdefault(tuple(w[:prefix_words]), i))
    sets = [frozenset(w) for w in toks]
    freq = Counter(t for s in sets for t in s)
    index: dict[str, list[int]] = {}
    for i, s in enumerate(sets):
        ordered = sorted(s, key=lambda t: (freq[t], t))
        candidates = set()
        for t in ordered[: len(s) - math.ceil(jaccard * len(s)) + 1]:
            candidates.update(index.setdefault(t, []))
            index[t].append(i)
        for j in candidates:
            if len(s & sets[j]) >= jaccard * len(s | sets[j]):
                union(i, j)
    clusters: dict[int, list[str]] = {}
    for i, s in enumerate(sentences):
        clusters.setdefault(find(i), []).append(s)
    return sorted(clusters.values())


def split_sentences(clusters: list[list[str]], langs_of: dict[str, set[str]], need: dict[str, dict[str, int]],
                    seed: int) -> dict[str, str]:
    """English sentence -> split, whole clusters per split.

    ``langs_of[sentence]``: the languages in which it may be spoken (it has a translation short enough);
    ``need[split][lang]``: how many such sentences ``lang`` needs in dev and test. Clusters of at most
    ``HELD_OUT_MAX_CLUSTER`` sentences, shuffled by the seed, go to test, then dev, while they give a
    language that still needs candidates there; every other cluster is train."""
    left = {split: dict(per_lang) for split, per_lang in need.items()}
    order = sorted(range(len(clusters)), key=lambda k: _stable_int(seed, "split", clusters[k][0]))
    out: dict[str, str] = {}
    for k in order:
        c = clusters[k]
        split = "train"
        if len(c) <= HELD_OUT_MAX_CLUSTER:
            gives = Counter(lang for s in c for lang in langs_of.get(s, ()))
            for held_out in ("test", "dev"):
                if any(left[held_out].get(lang, 0) > 0 for lang in gives):
                    split = held_out
                    for lang, n in gives.items():
                        left[held_out][lang] = left[held_out].get(lang, 0) - n
                    break
        out.update((s, split) for s in c)
    return out
