"""Round trips: shards written and read back locally, and through S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from reid3dsl.config import StorageConfig, load_config
from reid3dsl.data.index import load_index
from reid3dsl.data.reader import SkipCounter, iter_samples
from reid3dsl.data.s3 import list_urls, pyarrow_s3_filesystem
from reid3dsl.data.schema import Sample, SampleMeta, decode_sample, encode_sample
from reid3dsl.errors import UserError
from shards.__main__ import main


def read_all(root: str, cfg: StorageConfig) -> dict[str, Sample]:
    index = load_index(root, cfg)
    counter = SkipCounter()
    out = {s.key: s for split in index.splits.values() for s in iter_samples(split.shards, cfg, counter)}
    assert counter.total == 0
    return out


def assert_same(a: dict[str, Sample], b: dict[str, Sample]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].meta == b[key].meta
        np.testing.assert_array_equal(a[key].image, b[key].image)
        np.testing.assert_array_equal(a[key].keypoints, b[key].keypoints)
        np.testing.assert_array_equal(a[key].mask, b[key].mask)


def make_list_dataset(root: Path) -> None:
    """A `list` data set of 2 splits, crops with a bright person box on a dark background."""
    rng = np.random.default_rng(1)
    lines: dict[str, list[str]] = {"train": [], "query": [], "gallery": []}
    for i in range(12):
        img = rng.integers(0, 60, (64, 32, 3), dtype=np.uint8)
        img[8:58, 10:22] = rng.integers(180, 255, 3, dtype=np.uint8)
        rel = f"cam{i % 3}/p{i // 3}_{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img)
        split = "train" if i < 8 else ("query" if i % 2 else "gallery")
        lines[split].append(f"{rel} {i // 3 + 1} {i % 3} {i % 2}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")


def test_local_build_reads_back_every_source_image_with_its_labels(tmp_path: Path) -> None:
    make_list_dataset(tmp_path / "src")
    args = ["build", "--dataset", "list", "--root", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    assert main([*args, "--shard-size", "3", "--workers", "2"]) == 0
    samples = read_all(str(tmp_path / "out" / "list"), StorageConfig())
    assert len(samples) == 12
    s = samples["cam2/p1_5"]
    assert (s.meta.pid, s.meta.camid, s.meta.clothes, s.meta.split, s.meta.source) == (
        2,
        2,
        "2_1",
        "train",
        "cam2/p1_5.jpg",
    )
    # The original JPEG is stored as is: decoding it gives exactly what decoding the source gives.
    source = cv2.cvtColor(cv2.imread(str(tmp_path / "src" / "cam2/p1_5.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(s.image, source)
    assert s.mask is not None and s.mask[30, 16] == 255 and s.mask[30, 1] == 0  # GrabCut found the box
    index = load_index(str(tmp_path / "out" / "list"), StorageConfig())
    assert [sh.count for sh in index.split("train").shards] == [3, 3, 2]
    assert index.split("train").identities == (1, 2, 3) and index.num_classes == 3
    assert index.pid_to_class == {1: 0, 2: 1, 3: 2}
    assert list(index.clothes_to_index) == sorted({f"{i // 3 + 1}_{i % 2}" for i in range(12)})


def test_writer_round_trip_is_exact_and_leaves_no_temp_files(tmp_path: Path, toy_shards: Callable[..., str]) -> None:
    root = toy_shards(tmp_path / "toy", ids=3, per_id=4, shard_size=5, splits=("train", "gallery"))
    samples = read_all(root, StorageConfig())
    assert len(samples) == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    # Rebuilding replaces the data set as a whole.
    toy_shards(tmp_path / "toy", ids=2, per_id=2, shard_size=5)
    assert len(read_all(root, StorageConfig())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_shard_members_are_plain_ustar_entries(tmp_path: Path, toy_shards: Callable[..., str]) -> None:
    """A PAX header per member (webdataset's float mtime) makes shards a third larger and tar iteration half as
    fast; the writer's members carry none."""
    import tarfile

    root = toy_shards(tmp_path / "toy", ids=2, per_id=2, shard_size=10)
    shards = sorted(Path(root).glob("*.tar"))
    assert shards
    for shard in shards:
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            assert members and all(not m.pax_headers and isinstance(m.mtime, int) for m in members), shard


def test_a_writer_that_loses_a_race_keeps_the_winners_data_set(tmp_path: Path, toy_shards: Callable[..., str]) -> None:
    from reid3dsl.data.writer import DatasetWriter

    root = toy_shards(tmp_path / "toy", ids=2, per_id=2)
    late = DatasetWriter(root, "toy", StorageConfig(), replace=False)
    late.write(next(iter(read_all(root, StorageConfig()).values())))
    with pytest.raises(FileExistsError):
        late.close()
    assert len(read_all(root, StorageConfig())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_writing_a_bad_field_names_the_sample_and_the_field() -> None:
    meta = SampleMeta(3, -1, None, "toy", "train", "a.jpg")
    sample = Sample("a", np.zeros((8, 4, 3), np.uint8), np.zeros((17, 3), np.float32), meta)
    with pytest.raises(UserError, match=r"sample 'a': json field 'camid' = -1: expected a 0-based camera index"):
        encode_sample(sample)
    sample.meta = SampleMeta(3, 0, None, "toy", "train", "a.jpg", betas=(0.5, float("nan")))
    with pytest.raises(UserError, match=r"sample 'a': json field 'betas' = \[0.5, nan\]: expected a list of 1 to 300"):
        encode_sample(sample)


def test_betas_are_written_only_when_known_and_read_back_exactly() -> None:
    image, kp = np.zeros((8, 4, 3), np.uint8), np.zeros((17, 3), np.float32)
    known = SampleMeta(3, 0, "3_0", "toy", "val_query", "a.jpg", betas=(0.1, -2.75, 1 / 3))
    unknown = SampleMeta(3, 0, "3_0", "toy", "val_gallery", "b.jpg")
    assert "betas" not in json.loads(unknown.to_json())
    for key, meta in (("a", known), ("b", unknown)):
        raw = encode_sample(Sample(key, image, kp, meta))
        assert decode_sample({k: v for k, v in raw.items()}).meta == meta


def s3_args(settings: dict[str, str]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"storage.{key}={value}")]


def test_s3_upload_streams_back_the_same_samples(
    tmp_path: Path,
    toy_shards: Callable[..., str],
    s3_bucket: tuple[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, settings = s3_bucket
    cfg = StorageConfig(**settings)
    local = toy_shards(tmp_path / "toy", ids=3, per_id=4, shard_size=5, splits=("train", "query"))
    assert main(["upload", str(tmp_path), f"s3://{bucket}/sets", *s3_args(settings)]) == 0
    assert f"s3://{bucket}/sets/toy/index.json" in list_urls(cfg, f"s3://{bucket}/sets/")
    assert_same(read_all(local, StorageConfig()), read_all(f"s3://{bucket}/sets/toy", cfg))
    # inspect reads it over S3 too; pyarrow (Ray's checkpoint storage) reaches the same endpoint.
    assert main(["inspect", f"s3://{bucket}/sets/toy", *s3_args(settings)]) == 0
    assert "train" in capsys.readouterr().out
    from pyarrow import fs

    infos = pyarrow_s3_filesystem(cfg).get_file_info(fs.FileSelector(f"{bucket}/sets/toy"))
    assert {Path(i.path).name for i in infos} >= {"index.json", "train-000000.tar", "query-000000.tar"}


def test_build_writes_straight_to_s3(tmp_path: Path, s3_bucket: tuple[str, dict[str, str]]) -> None:
    bucket, settings = s3_bucket
    make_list_dataset(tmp_path / "src")
    args = ["build", "--dataset", "list", "--root", str(tmp_path / "src"), "--masks", "none", "--shard-size", "4"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert main([*args, "--out", f"s3://{bucket}/built", *s3_args(settings)]) == 0
    assert_same(
        read_all(str(tmp_path / "out" / "list"), StorageConfig()),
        read_all(f"s3://{bucket}/built/list", StorageConfig(**settings)),
    )


def test_the_s3_endpoint_comes_from_the_environment_when_the_config_does_not_set_it(s3_endpoint: str) -> None:
    cfg = load_config(None, [], env={"AWS_ENDPOINT_URL": s3_endpoint})
    assert cfg.storage.endpoint == s3_endpoint
