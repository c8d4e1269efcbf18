"""Bad data is skipped, counted and reported — never fatal, never silent; reads retry and resume."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reid3dsl.config import StorageConfig, load_config
from reid3dsl.data.index import ShardInfo, load_index
from reid3dsl.data.pipeline import eval_batches, train_batches
from reid3dsl.data.reader import SkipCounter, iter_samples
from reid3dsl.data.s3 import RetryingReader, s3_client


def test_a_shard_truncated_in_the_middle_yields_its_intact_samples_and_counts_the_rest(
    tmp_path: Path, toy_shards: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    root = toy_shards(tmp_path / "toy", ids=4, per_id=5, shard_size=10, splits=("gallery",))
    index = load_index(root, StorageConfig())
    first = Path(index.split("gallery").shards[0].url)
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    counter = SkipCounter()
    keys = [s.key for s in iter_samples(index.split("gallery").shards, StorageConfig(), counter)]
    assert 10 < len(keys) < 20  # the second shard whole, the first up to the cut
    assert counter.total == 20 - len(keys)
    assert keys[-10:] == [f"gallery/{pid:03d}_{j:02d}" for pid in (3, 4) for j in range(5)]
    assert any("gallery-000000.tar" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    # The evaluation stream reports the same count in its batches.
    cfg = load_config(None, [f"data.root={root}", "data.loader_workers=0"], env={})
    batches = list(eval_batches(cfg, "gallery", 0, 1, batch_size=4))
    assert sum(len(b["key"]) for b in batches) == len(keys)
    assert sum(int(b["skipped"]) for b in batches) == 20 - len(keys)


def rewrite_members(shard: Path, edit: Callable[[str, bytes], bytes]) -> None:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(shard) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = edit(member.name, src.extractfile(member).read())  # type: ignore[union-attr]
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    shard.write_bytes(out.getvalue())


def test_undecodable_images_malformed_json_and_bad_keypoints_are_skipped_and_counted(
    tmp_path: Path, toy_shards: Callable[..., str]
) -> None:
    root = toy_shards(tmp_path / "toy", ids=2, per_id=5, shard_size=10)
    shard = load_index(root, StorageConfig()).split("train").shards[0]
    bad = {
        "train/001_00.jpg": b"not a jpeg",
        "train/001_01.json": b"{pid: 1",
        "train/001_02.json": json.dumps({"pid": "one", "camid": 0}).encode(),
        "train/001_03.kp.npy": b"garbage",
    }
    rewrite_members(Path(shard.url), lambda name, data: bad.get(name, data))
    counter = SkipCounter()
    keys = [s.key for s in iter_samples([shard], StorageConfig(), counter)]
    assert counter.total == 4 and len(keys) == 6
    assert "train/001_04" in keys and "train/001_00" not in keys


def test_a_malformed_betas_field_is_skipped_and_counted_like_other_bad_samples(
    tmp_path: Path, toy_shards: Callable[..., str]
) -> None:
    root = toy_shards(tmp_path / "toy", ids=2, per_id=6, shard_size=12)
    shard = load_index(root, StorageConfig()).split("train").shards[0]
    betas = {
        "train/001_00.json": "tall",
        "train/001_01.json": [0.5, float("nan")],
        "train/001_02.json": [0.1] * 301,
        "train/001_03.json": [True, 1.0],
        "train/001_04.json": [],
        "train/001_05.json": [0.5, -1.25],  # a good one
    }

    def edit(name: str, data: bytes) -> bytes:
        return json.dumps({**json.loads(data), "betas": betas[name]}).encode() if name in betas else data

    rewrite_members(Path(shard.url), edit)
    counter = SkipCounter()
    samples = {s.key: s for s in iter_samples([shard], StorageConfig(), counter)}
    assert counter.total == 5 and len(samples) == 7
    assert samples["train/001_05"].meta.betas == (0.5, -1.25)
    assert all(samples[f"train/002_{j:02d}"].meta.betas is None for j in range(6))


def test_an_unreadable_shard_is_skipped_and_counted_and_training_goes_on(
    tmp_path: Path, toy_shards: Callable[..., str]
) -> None:
    root = toy_shards(tmp_path / "toy", ids=6, per_id=4, shard_size=8)
    Path(load_index(root, StorageConfig()).split("train").shards[1].url).unlink()
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            "train.batch_size=4",
            "data.imgs_per_id=2",
            "data.loader_workers=0",
            "data.shuffle_buffer=0",
        ],
        env={},
    )
    batches = train_batches(cfg, 0, 1)
    drawn = [next(batches) for _ in range(12)]  # more than one pass over the 16 readable samples
    assert sum(int(b["skipped"]) for b in drawn) >= 8  # the missing shard's 8 samples, every pass


def test_a_missing_s3_object_is_skipped_and_counted(
    tmp_path: Path, toy_shards: Callable[..., str], s3_bucket: tuple[str, dict[str, str]]
) -> None:
    bucket, settings = s3_bucket
    cfg = StorageConfig(**settings, retries=2, backoff=0.01)
    root = toy_shards(f"s3://{bucket}/toy", ids=2, per_id=3, shard_size=3, storage=cfg)
    shards = load_index(root, cfg).split("train").shards
    s3_client(cfg).delete_object(Bucket=bucket, Key="toy/train-000000.tar")
    counter = SkipCounter()
    assert len(list(iter_samples(shards, cfg, counter))) == 3
    assert counter.total == 3
    unknown = SkipCounter()  # a shard index.json does not list (data.train_urls): counted as one
    assert list(iter_samples([ShardInfo(f"s3://{bucket}/toy/none.tar", None)], cfg, unknown)) == []
    assert unknown.total == 1


class FlakyBody:
    """A body that breaks after `fail_after` bytes, like a dropped connection."""

    def __init__(self, data: bytes, offset: int, fail_after: int | None) -> None:
        self.stream = io.BytesIO(data[offset:])
        self.left = fail_after

    def read(self, n: int) -> bytes:
        if self.left is not None and self.left <= 0:
            raise ConnectionResetError("connection reset by peer")
        chunk = self.stream.read(n if self.left is None else min(n, self.left))
        if self.left is not None:
            self.left -= len(chunk)
        return chunk


def test_a_broken_read_resumes_at_the_same_byte_and_gives_up_after_the_retries() -> None:
    data = np.random.default_rng(0).bytes(100_000)
    offsets: list[int] = []

    def fetch(offset: int) -> FlakyBody:
        offsets.append(offset)
        return FlakyBody(data, offset, fail_after=30_000 if len(offsets) < 3 else None)

    reader = io.BufferedReader(RetryingReader(fetch, retries=3, wait=lambda attempt: 0.0, name="x"), 4096)
    assert reader.read() == data
    assert offsets[0] == 0 and offsets[1] == 30_000 and offsets[2] == 60_000

    def always_broken(offset: int) -> FlakyBody:
        return FlakyBody(data, offset, fail_after=0)

    broken = RetryingReader(always_broken, retries=2, wait=lambda attempt: 0.0, name="y")
    with pytest.raises(ConnectionResetError):
        broken.read(10)
