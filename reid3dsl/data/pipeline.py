"""The training and evaluation streams: shards (local or s3://) → samples → tensors → batches.

`train_batches` is one endless iterator of identity-balanced P × K batches per rank: the shard list is
reshuffled every pass with a seed all ranks share and sliced over (rank, loader worker), so in every pass
each shard is read by exactly one reader; each reader shuffles its samples in a buffer, assembles P × K
batches and augments them. Because the stream never ends, every rank can draw the same number of batches
(`train.steps_per_epoch` per epoch) and collectives never wait on a rank that ran dry.

`eval_batches` reads one split once, in index order, split over ranks and loader workers, without
augmentation. Both report in each batch how many samples were skipped (`skipped`, for `data/skipped`), and
carry the identity's true shape where the data set knows it (`betas`, `has_betas`: the embedded set does).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from reid3dsl.config import BodyConfig, Config
from reid3dsl.data.index import DatasetIndex, ShardInfo, load_index
from reid3dsl.data.reader import SkipCounter, iter_samples
from reid3dsl.data.sampler import Assignment, PKBatcher, assign_shards, pass_assignment
from reid3dsl.data.schema import Sample
from reid3dsl.data.transforms import SampleTransform
from reid3dsl.errors import UserError

# Label of the numpy seed sequence of each reader's own randomness (shuffle, P x K choice, augmentation),
# apart from the shard order every reader shares (sampler.SHARD_ORDER_STREAM).
_READER_STREAM = 2
log = logging.getLogger(__name__)


def _worker_slot(rank: int, world_size: int) -> tuple[int, int, int]:
    """(slot, number of slots, loader worker id) of the calling DataLoader worker (or the main process)."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world_size * workers, worker


def collate(
    samples: Sequence[Sample],
    transform: SampleTransform,
    rng: np.random.Generator | None,
    pids: Sequence[int],
    clothes_to_index: dict[str, int],
    skipped: int,
    num_betas: int = BodyConfig().num_betas,
) -> dict[str, Any]:
    """Transform and stack samples → the batch dict of the data contract (B = len(samples)).

    image (B, 3, height, width), shape_image (B, 3, shape_height, shape_width), mask (B, sil_height, sil_width),
    has_mask (B,) bool, keypoints (B, 17, 3), pid / camid / clothes (B,) long, betas (B, num_betas) float32 (the
    sample's true shape, zero-padded or truncated to `num_betas` = body.num_betas; zeros where unknown),
    has_betas (B,) bool, key list[str], skipped () long.
    """
    items = [transform(s, rng) for s in samples]
    image = torch.stack([it["image"] for it in items])
    betas = torch.zeros(len(samples), num_betas)
    for i, s in enumerate(samples):
        if s.meta.betas is not None:
            known = s.meta.betas[:num_betas]
            betas[i, : len(known)] = torch.tensor(known)
    return {
        "image": image,
        "shape_image": image if transform.shares_shape_image else torch.stack([it["shape_image"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "has_mask": torch.tensor([it["has_mask"] for it in items], dtype=torch.bool),
        "keypoints": torch.stack([it["keypoints"] for it in items]),
        "pid": torch.tensor(list(pids), dtype=torch.long),
        "camid": torch.tensor([s.meta.camid for s in samples], dtype=torch.long),
        "clothes": torch.tensor(
            [clothes_to_index.get(s.meta.clothes, -1) if s.meta.clothes is not None else -1 for s in samples],
            dtype=torch.long,
        ),
        "betas": betas,
        "has_betas": torch.tensor([s.meta.betas is not None for s in samples], dtype=torch.bool),
        "key": [s.key for s in samples],
        "skipped": torch.tensor(skipped, dtype=torch.long),
    }


class TrainStream(IterableDataset):
    """Endless P × K batches for one rank; each DataLoader worker reads its own slice of the shards."""

    def __init__(self, cfg: Config, index: DatasetIndex, shards: Sequence[ShardInfo], rank: int, world_size: int):
        super().__init__()
        self.cfg = cfg
        self.shards = list(shards)
        self.rank = rank
        self.world_size = world_size
        self.k = cfg.data.imgs_per_id
        self.p = per_rank_batch(cfg, world_size) // self.k
        self.pid_to_class = index.pid_to_class
        self.clothes_to_index = index.clothes_to_index

    def _samples(self, slot: int, num_slots: int, counter: SkipCounter) -> Iterator[Sample]:
        """This reader's samples, pass after pass; the shard order of pass n is the same on every reader."""
        for epoch in itertools.count():
            part = pass_assignment(self.shards, self.cfg.train.seed, epoch, slot, num_slots)
            # Which reader reads what, across ranks and nodes: the first pass at INFO (every pass is
            # a reshuffle of the same kind), later ones at DEBUG.
            what = describe_assignment(part, self.shards, self.cfg.data.root)
            log.log(logging.INFO if epoch == 0 else logging.DEBUG, "rank %d/%d, reader %d/%d, pass %d reads %s",
                    self.rank, self.world_size, slot, num_slots, epoch, what)
            pids: set[int] = set()
            for sample in iter_samples(part.shards, self.cfg.storage, counter, part.stride, part.offset,
                                       self.cfg.data.max_image_side):
                if sample.meta.pid not in self.pid_to_class:
                    counter.add(1, f"sample '{sample.key}': pid {sample.meta.pid} is not a training identity")
                    continue
                pids.add(sample.meta.pid)
                yield sample
            if epoch == 0 and len(pids) < self.p:
                raise UserError(
                    f"training shards of '{self.cfg.data.root}': reader {slot} of {num_slots} (rank x loader "
                    f"worker) sees {len(pids)} identities; P x K batches need P = {self.p} (fewer ranks, "
                    "data.loader_workers, or train.batch_size; or more shards)"
                )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        slot, num_slots, worker = _worker_slot(self.rank, self.world_size)
        counter = SkipCounter()
        rng = np.random.default_rng([self.cfg.train.seed, _READER_STREAM, self.rank, worker])
        transform = SampleTransform(self.cfg.data, train=True)
        batcher = PKBatcher(self.p, self.k, rng)
        stream = self._samples(slot, num_slots, counter)
        buffer = self.cfg.data.shuffle_buffer
        if buffer > 1:
            stream = wds.shuffle(buffer, initial=buffer, seed=int(rng.integers(2**31)))(stream)
        for sample in stream:
            for batch in batcher.add(sample):
                pids = [self.pid_to_class[s.meta.pid] for s in batch]
                yield collate(batch, transform, rng, pids, self.clothes_to_index, counter.take(),
                              self.cfg.body.num_betas)


class EvalStream(IterableDataset):
    """One pass over a split in index order, split over ranks and loader workers, no augmentation."""

    def __init__(self, cfg: Config, index: DatasetIndex, split: str, rank: int, world_size: int, batch_size: int):
        super().__init__()
        self.cfg = cfg
        self.shards = list(index.split(split).shards)
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.clothes_to_index = index.clothes_to_index

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot, num_slots, _ = _worker_slot(self.rank, self.world_size)
        counter = SkipCounter()
        transform = SampleTransform(self.cfg.data, train=False)
        part = assign_shards(self.shards, slot, num_slots)
        samples = iter_samples(part.shards, self.cfg.storage, counter, part.stride, part.offset,
                               self.cfg.data.max_image_side)
        while batch := list(itertools.islice(samples, self.batch_size)):
            pids = [s.meta.pid for s in batch]
            yield collate(batch, transform, None, pids, self.clothes_to_index, counter.take(), self.cfg.body.num_betas)


def describe_assignment(part: Assignment[ShardInfo], shards: Sequence[ShardInfo], root: str) -> str:
    """One line saying what a reader reads in a pass, shard names relative to `root` where they lie under it:
    `2 of 6 shards [train-000003.tar, train-000000.tar]`, or where there are fewer shards than readers
    `samples i % 2 == 1 of all 1 shards [train-000000.tar]`."""
    prefix = root.rstrip("/") + "/"
    names = ", ".join(s.url.removeprefix(prefix) for s in part.shards)
    if part.stride == 1:
        return f"{len(part.shards)} of {len(shards)} shards [{names}]"
    return f"samples i % {part.stride} == {part.offset} of all {len(shards)} shards [{names}]"


def per_rank_batch(cfg: Config, world_size: int) -> int:
    """train.batch_size // world_size, checked to split into P identities × data.imgs_per_id images."""
    batch, k = cfg.train.batch_size, cfg.data.imgs_per_id
    if batch % world_size or (batch // world_size) % k:
        raise UserError(
            f"train.batch_size = {batch}: expected a multiple of {world_size} workers x data.imgs_per_id = {k} "
            f"(= {world_size * k})"
        )
    return batch // world_size


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}: expected 0 <= rank < world_size")


def _loader(dataset: IterableDataset, workers: int) -> Iterator[dict[str, Any]]:
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )
    try:
        yield from loader
    except UserError as err:
        # A loader worker's UserError comes back with the worker's traceback folded into its message:
        # keep the one line the user needs.
        raise UserError(str(err).rsplit("UserError: ", 1)[-1]) from None


def training_shards(cfg: Config, index: DatasetIndex) -> list[ShardInfo]:
    """The training shards: `data.train_urls` (brace patterns expanded) when given, else index.json's."""
    if not cfg.data.train_urls:
        return list(index.split("train").shards)
    from webdataset.shardlists import expand_urls

    return [ShardInfo(url, None) for pattern in cfg.data.train_urls for url in expand_urls(pattern)]


def train_batches(cfg: Config, rank: int, world_size: int) -> Iterator[dict[str, Any]]:
    """One endless iterator of P × K batches for `rank` of `world_size` (call once, draw
    `train.steps_per_epoch` batches per epoch). `pid` holds class indices 0..C-1 (`DatasetIndex.num_classes`);
    see `collate` for the batch dict and its shapes (B = train.batch_size // world_size)."""
    _check_rank(rank, world_size)
    index = load_index(cfg.data.root, cfg.storage)
    dataset = TrainStream(cfg, index, training_shards(cfg, index), rank, world_size)
    return _loader(dataset, cfg.data.loader_workers)


def eval_batches(
    cfg: Config,
    split: Literal["query", "gallery", "val_query", "val_gallery"],
    rank: int,
    world_size: int,
    batch_size: int,
) -> Iterator[dict[str, Any]]:
    """Each sample of `split` exactly once across all ranks, in a deterministic order, without augmentation;
    `pid` is the data set's own pid. Batches of at most `batch_size` (see `collate` for the dict)."""
    _check_rank(rank, world_size)
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: expected >= 1")
    index = load_index(cfg.data.root, cfg.storage)
    return _loader(EvalStream(cfg, index, split, rank, world_size, batch_size), cfg.data.loader_workers)
