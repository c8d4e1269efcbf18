"""P x K identity-balanced batches and the batch contract the trainer codes against."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from reid3dsl.config import load_config
from reid3dsl.data.index import load_index
from reid3dsl.data.pipeline import train_batches
from reid3dsl.data.sampler import PKBatcher
from reid3dsl.data.schema import Sample, SampleMeta
from reid3dsl.errors import UserError


@pytest.mark.parametrize(("batch_size", "k", "world"), [(16, 4, 1), (12, 2, 2)])
def test_every_batch_has_p_identities_times_k_images(
    tmp_path: Path, toy_shards: Callable[..., str], batch_size: int, k: int, world: int
) -> None:
    root = toy_shards(tmp_path / "toy", ids=9, per_id=7, shard_size=16, outfits=3)
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            f"train.batch_size={batch_size}",
            f"data.imgs_per_id={k}",
            "data.loader_workers=1",
            "data.shuffle_buffer=16",
            "data.shape_height=96",
            "data.shape_width=48",
        ],
        env={},
    )
    p = batch_size // world // k
    index = load_index(root, cfg.storage)
    class_to_pid = {c: pid for pid, c in index.pid_to_class.items()}
    clothes_names = {i: name for name, i in index.clothes_to_index.items()}
    several_outfits = 0
    for rank in range(world):
        batches = train_batches(cfg, rank, world)
        for _ in range(10):
            b = next(batches)
            counts = Counter(b["pid"].tolist())
            assert len(counts) == p and set(counts.values()) == {k}
            assert set(counts) <= set(class_to_pid)  # class indices 0..C-1, not pids
            # Clothes labels travel with the images: each names an outfit of that image's identity.
            for c, clothes in zip(b["pid"].tolist(), b["clothes"].tolist(), strict=True):
                assert clothes_names[clothes].startswith(f"{class_to_pid[c]}_")
            several_outfits += sum(len(set(b["clothes"][b["pid"] == c].tolist())) > 1 for c in counts)
            n = p * k
            assert b["image"].shape == (n, 3, 128, 64) and b["image"].dtype == torch.float32
            assert b["shape_image"].shape == (n, 3, 96, 48)
            assert b["mask"].shape == (n, 32, 16) and 0 <= b["mask"].min() and b["mask"].max() <= 1
            assert b["has_mask"].dtype == torch.bool and bool(b["has_mask"].all())
            assert b["keypoints"].shape == (n, 17, 3) and b["keypoints"].dtype == torch.float32
            assert b["camid"].shape == (n,) and b["camid"].dtype == torch.long
            assert len(b["key"]) == n and b["skipped"].ndim == 0
    assert several_outfits > 0  # clothes-aware mining finds same-identity positives in other clothes


def sample(pid: int, j: int, clothes: str) -> Sample:
    meta = SampleMeta(pid, 0, clothes, "toy", "train", f"{pid}_{j}")
    return Sample(f"{pid}_{j}", np.zeros((4, 2, 3), np.uint8), np.zeros((17, 3), np.float32), meta)


def test_an_identity_with_fewer_than_k_images_joins_once_later_passes_fill_it() -> None:
    batcher = PKBatcher(p=2, k=3, rng=np.random.default_rng(0))
    stream = [sample(1, j, "1_0") for j in range(3)] + [sample(2, 0, "2_0"), sample(2, 1, "2_1")]
    assert [b for s in stream for b in batcher.add(s)] == []  # pid 2 has only 2 of K = 3
    batches = [b for s in stream for b in batcher.add(s)]  # the second pass
    assert len(batches) == 1
    assert Counter(s.meta.pid for s in batches[0]) == {1: 3, 2: 3}
    assert {s.meta.clothes for s in batches[0] if s.meta.pid == 2} == {"2_0", "2_1"}


def test_the_k_images_of_an_identity_cover_its_buffered_outfits() -> None:
    batcher = PKBatcher(p=2, k=2, rng=np.random.default_rng(0))
    for j, outfit in enumerate("aabb"):  # pid 1 is ready after two images but waits for a second identity
        assert batcher.add(sample(1, j, f"1_{outfit}")) == []
    assert batcher.add(sample(2, 0, "2_a")) == []
    (batch,) = batcher.add(sample(2, 1, "2_a"))
    assert {s.meta.clothes for s in batch if s.meta.pid == 1} == {"1_a", "1_b"}


def test_too_few_identities_for_p_is_a_one_line_error(tmp_path: Path, toy_shards: Callable[..., str]) -> None:
    root = toy_shards(tmp_path / "toy", ids=3, per_id=4)
    cfg = load_config(
        None, [f"data.root={root}", "train.batch_size=16", "data.imgs_per_id=4", "data.loader_workers=1"], env={}
    )
    with pytest.raises(UserError, match=r"sees 3 identities; P x K batches need P = 4") as err:
        next(train_batches(cfg, 0, 1))
    assert "Traceback" not in str(err.value) and str(err.value).startswith("training shards of")


def test_a_per_rank_batch_that_does_not_split_into_k_is_rejected(
    tmp_path: Path, toy_shards: Callable[..., str]
) -> None:
    root = toy_shards(tmp_path / "toy", ids=3, per_id=4)
    cfg = load_config(None, [f"data.root={root}", "train.batch_size=12", "data.imgs_per_id=4"], env={})
    with pytest.raises(UserError, match=r"train.batch_size = 12: expected a multiple of 2 workers x data.imgs_per_id"):
        train_batches(cfg, 0, 2)
