"""Splitting shards over ranks and loader workers: every shard (sample) read exactly once per pass, the
same number of batches on every rank."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from reid3dsl.config import Config, StorageConfig, load_config
from reid3dsl.data.index import load_index
from reid3dsl.data.pipeline import eval_batches, train_batches
from reid3dsl.data.reader import SkipCounter, iter_samples
from reid3dsl.data.sampler import pass_assignment

RANKS, WORKERS = 2, 2


def config(root: str, *overrides: str) -> Config:
    return load_config(None, [f"data.root={root}", "data.loader_workers=2", *overrides], env={})


@pytest.mark.parametrize("shard_size", [4, 12], ids=["more-shards-than-readers", "fewer-shards-than-readers"])
def test_two_ranks_by_two_workers_read_every_sample_exactly_once_per_pass(
    tmp_path: Path, toy_shards: Callable[..., str], shard_size: int
) -> None:
    root = toy_shards(tmp_path / "toy", ids=6, per_id=5, shard_size=shard_size)
    shards = load_index(root, StorageConfig()).split("train").shards
    every = {f"train/{pid:03d}_{j:02d}" for pid in range(1, 7) for j in range(5)}
    orders = []
    for epoch in (0, 1):
        seen: Counter[str] = Counter()
        read: Counter[str] = Counter()
        for slot in range(RANKS * WORKERS):
            part = pass_assignment(shards, seed=0, epoch=epoch, slot=slot, num_slots=RANKS * WORKERS)
            read.update(s.url for s in part.shards)
            samples = iter_samples(part.shards, StorageConfig(), SkipCounter(), part.stride, part.offset)
            seen.update(s.key for s in samples)
        assert set(seen) == every and set(seen.values()) == {1}
        if len(shards) >= RANKS * WORKERS:
            assert set(read.values()) == {1} and len(read) == len(shards)  # shard level: each shard once
        orders.append(pass_assignment(shards, seed=0, epoch=epoch, slot=0, num_slots=RANKS * WORKERS).shards)
    if len(shards) >= RANKS * WORKERS:
        assert orders[0] != orders[1]  # reshuffled every pass


@pytest.mark.parametrize("shard_size", [4, 12], ids=["more-shards-than-readers", "fewer-shards-than-readers"])
def test_evaluation_reads_each_sample_once_across_ranks_and_loader_workers_in_a_fixed_order(
    tmp_path: Path, toy_shards: Callable[..., str], shard_size: int
) -> None:
    root = toy_shards(tmp_path / "toy", ids=5, per_id=5, shard_size=shard_size, splits=("gallery",))
    cfg = config(root)

    def keys(rank: int) -> list[str]:
        return [k for batch in eval_batches(cfg, "gallery", rank, RANKS, batch_size=4) for k in batch["key"]]

    per_rank = [keys(rank) for rank in range(RANKS)]
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == 25 and len(set(everything)) == 25
    assert keys(0) == per_rank[0]  # deterministic


def test_every_rank_can_draw_the_same_number_of_batches_from_an_uneven_split(
    tmp_path: Path, toy_shards: Callable[..., str]
) -> None:
    # 5 shards over 2 ranks x 2 workers: one reader has two shards, the others one; the stream is endless.
    root = toy_shards(tmp_path / "toy", ids=10, per_id=5, shard_size=10)
    cfg = config(root, "train.batch_size=8", "data.imgs_per_id=2", "data.shuffle_buffer=8")
    steps = 12
    for rank in range(RANKS):
        batches = train_batches(cfg, rank, RANKS)
        drawn = [next(batches) for _ in range(steps)]
        assert len(drawn) == steps and all(len(b["key"]) == 4 for b in drawn)
