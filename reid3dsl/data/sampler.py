"""Identity-balanced P × K batches assembled from a stream of samples, and the shard split between readers.

`PKBatcher` buffers samples per identity; as soon as P identities hold K samples each it emits a batch of
those P × K, choosing each identity's K to cover as many of its outfits as it has (so clothes-aware triplet
mining finds same-person/other-clothes positives). Identities with fewer than K images fill up over later
passes of the endless training stream (sampling with replacement, as K-sampling does for small classes).

`assign_shards` gives each reader slot (rank × loader worker) its part of the shards for one pass: disjoint
slices of the shard list when there are at least as many shards as slots, otherwise every slot reads all
shards and keeps every n-th sample — either way each sample is read by exactly one slot per pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from reid3dsl.data.schema import Sample

T = TypeVar("T")
SHARD_ORDER_STREAM = 1  # label of the numpy seed sequence of shard orders (apart from other random streams)


@dataclass(frozen=True)
class Assignment(Generic[T]):
    """The shards one reader slot reads in a pass, and which of their samples it keeps (i % stride == offset)."""

    shards: list[T]
    stride: int
    offset: int


def assign_shards(shards: Sequence[T], slot: int, num_slots: int) -> Assignment[T]:
    """Slot `slot` of `num_slots` → its `Assignment` (shards in the given order)."""
    if not 0 <= slot < num_slots:
        raise ValueError(f"slot {slot}: expected 0 <= slot < {num_slots}")
    if len(shards) >= num_slots:
        return Assignment(list(shards[slot::num_slots]), 1, 0)
    return Assignment(list(shards), num_slots, slot)


def pass_assignment(shards: Sequence[T], seed: int, epoch: int, slot: int, num_slots: int) -> Assignment[T]:
    """What reader `slot` reads in pass `epoch`: the shards reshuffled with a permutation every reader
    derives from (seed, epoch) alone, then `assign_shards` — so the readers of one pass partition the data."""
    order = np.random.default_rng([seed, SHARD_ORDER_STREAM, epoch]).permutation(len(shards))
    return assign_shards([shards[i] for i in order], slot, num_slots)


def _clothes_spread(bucket: list[Sample], k: int, rng: np.random.Generator) -> tuple[list[Sample], list[Sample]]:
    """Pick k of the bucket covering as many outfits as possible → (picked, rest)."""
    order = rng.permutation(len(bucket))
    rank_in_outfit: dict[Hashable, int] = defaultdict(int)
    keyed = []
    for i in order:
        outfit = bucket[i].meta.clothes
        keyed.append((rank_in_outfit[outfit], len(keyed), i))
        rank_in_outfit[outfit] += 1
    chosen = {i for _, _, i in sorted(keyed)[:k]}
    picked = [bucket[i] for i in order if i in chosen]
    rest = [bucket[i] for i in range(len(bucket)) if i not in chosen]
    return picked, rest


class PKBatcher:
    """Buffer samples by identity; `add` returns the P × K batches that became complete (ordered by identity)."""

    def __init__(self, p: int, k: int, rng: np.random.Generator) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"P x K = {p} x {k}: expected P >= 1 and K >= 1")
        self.p = p
        self.k = k
        self.rng = rng
        self.buckets: dict[int, list[Sample]] = defaultdict(list)
        self._ready: set[int] = set()

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self.buckets.values())

    def add(self, sample: Sample) -> list[list[Sample]]:
        pid = sample.meta.pid
        bucket = self.buckets[pid]
        bucket.append(sample)
        if len(bucket) >= self.k:
            self._ready.add(pid)
        batches = []
        while len(self._ready) >= self.p:
            pids = self.rng.choice(sorted(self._ready), size=self.p, replace=False)
            batch: list[Sample] = []
            for chosen in pids:
                picked, rest = _clothes_spread(self.buckets[int(chosen)], self.k, self.rng)
                batch.extend(picked)
                self.buckets[int(chosen)] = rest
                if len(rest) < self.k:
                    self._ready.discard(int(chosen))
            batches.append(batch)
        return batches
