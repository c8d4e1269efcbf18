"""Data-loading benchmark: the shard pipeline against the ways ReID toolboxes read data, on the same bytes.

The samples of the configured data set (`data.root`, synthesized first when `data.synthesize` asks for it, as
the job does) are written twice into a scratch folder, byte for byte the same JPEGs and mask PNGs:
- shards: one data set with a single split, read by `reid3dsl.data.pipeline.eval_batches` (the pipeline's
  in-order reader: shards split over `data.loader_workers` loader processes, transform, collate);
- files: one file per image and per mask plus one annotation file with labels and keypoints, read by a
  map-style `torch.utils.data.Dataset` that opens each file with PIL (`FileFolder`), through a `DataLoader`
  with the same number of workers, the same batch size and the same transform and collate.
Both are also put on an S3 server (moto on 127.0.0.1, started here) and read from there: the shards as
streams, the files as one GET per image and per mask. Every loader must produce the same tensors for the
same keys (checked first). Then, round by round (`bench.common.rounds`), one pass of each over all samples:
(a) shard loader vs file loader, local disk; (b) shard loader from S3 vs from local disk; (c) shard loader
vs file loader, both from S3; (d) the shard reader itself (`iter_samples`, one process) vs decoding the same
sample bytes already in memory (`decode_sample`), with the tar iteration alone timed to show where the rest of
the reader's time goes.
Prints a table and merges it into bench/results.json under "data".

    python -m bench.data [--config configs/demo.yaml] [--set section.key=value ...] [--quick] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.common import RESULTS, Figure, figure, load_avg, machine, median, merge_results, rate, rounds, table
from reid3dsl.config import Config, DataConfig, StorageConfig, add_config_args, config_from_args
from reid3dsl.data.schema import MASK_EXT, Sample, SampleError, SampleMeta, check_keypoints, decode_sample
from reid3dsl.errors import UserError, cli_main
from reid3dsl.log import progress, setup_logging

log = logging.getLogger(__name__)
BUCKET = "bench"
SPLIT = "gallery"  # the one split of the benchmark's data set (eval_batches reads query or gallery)
ANNOTATIONS = "annotations.json"
QUICK_SAMPLES = 256


def raw_samples(url: str) -> Iterator[dict[str, Any]]:
    """The stored samples of one shard as webdataset groups them (`__key__` + member bytes), undecoded."""
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    with wds.gopen(url) as opened:
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": opened}]))


class FileFolder(Dataset):
    """The baseline: a folder of files as ReID toolboxes read it — one image file and one mask file per sample,
    labels and keypoints from one annotation file read once — with PIL, in a map-style Dataset. `root` is a local
    folder or an s3:// prefix (then every item costs one GET per image and one per mask)."""

    def __init__(self, root: str, storage: StorageConfig) -> None:
        from reid3dsl.data.s3 import join_url, read_bytes

        self.root = root
        self.storage = storage
        self.items = json.loads(read_bytes(join_url(root, ANNOTATIONS), storage))["items"]

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, name: str, mode: str) -> np.ndarray:
        from PIL import Image

        from reid3dsl.data.s3 import join_url, read_bytes

        with Image.open(io.BytesIO(read_bytes(join_url(self.root, name), self.storage))) as img:
            return np.array(img.convert(mode))  # a writable copy, as torchvision's ToTensor makes

    def __getitem__(self, i: int) -> Sample:
        item = self.items[i]
        mask = self._image(item["mask"], "L") if item["mask"] is not None else None
        keypoints = np.asarray(item["keypoints"], dtype=np.float32)
        return Sample(item["key"], self._image(item["image"], "RGB"), keypoints, SampleMeta(**item["meta"]), mask)


def _collate_files(samples: list[Sample], cfg: DataConfig, clothes_to_index: dict[str, int]) -> dict[str, Any]:
    from reid3dsl.data.pipeline import collate
    from reid3dsl.data.transforms import SampleTransform

    return collate(samples, SampleTransform(cfg, train=False), None, [s.meta.pid for s in samples],
                   clothes_to_index, 0)


@dataclasses.dataclass
class BenchSet:
    """The benchmark's data, in both layouts: `shards` and `files` (folders or s3:// prefixes) and the shards'
    sample bytes in memory (`raws`)."""

    shards: str
    files: str
    raws: list[dict[str, Any]]


def build(cfg: Config, work: Path, limit: int | None) -> BenchSet:
    """Copy (at most `limit`) samples of every split of `cfg.data.root` into one-split shards under `work/shards`
    (the JPEG bytes as they are), then write the same member bytes as files under `work/files`."""
    from reid3dsl.data.index import load_index
    from reid3dsl.data.reader import SkipCounter
    from reid3dsl.data.s3 import register_s3_scheme
    from reid3dsl.data.writer import DatasetWriter

    register_s3_scheme(cfg.storage)
    index = load_index(cfg.data.root, cfg.storage)
    shard_size = max(s.count or 1 for split in index.splits.values() for s in split.shards)
    skipped = SkipCounter()
    written = 0
    with DatasetWriter(str(work / "shards"), index.dataset, cfg.storage, shard_size=shard_size) as writer:
        for shard in (s for split in index.splits.values() for s in split.shards):
            for raw in raw_samples(shard.url):
                try:
                    sample = decode_sample(raw)
                except SampleError as err:
                    skipped.add(1, str(err))
                    continue
                meta = dataclasses.replace(sample.meta, split=SPLIT)
                writer.write(dataclasses.replace(sample, meta=meta, jpeg=bytes(raw["jpg"])))
                written += 1
                if written == limit:
                    break
            if written == limit:
                break
    if not written:
        raise UserError(f"data set '{cfg.data.root}': no readable samples to benchmark with")
    raws = [raw for shard in load_index(str(work / "shards"), cfg.storage).split(SPLIT).shards
            for raw in raw_samples(shard.url)]
    files = work / "files"
    items = []
    for raw in raws:
        key = raw["__key__"]
        (files / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        (files / "images" / f"{key}.jpg").write_bytes(raw["jpg"])
        mask = None
        if raw.get(MASK_EXT) is not None:
            mask = f"masks/{key}.png"
            (files / mask).parent.mkdir(parents=True, exist_ok=True)
            (files / mask).write_bytes(raw[MASK_EXT])
        keypoints = check_keypoints(np.load(io.BytesIO(raw["kp.npy"])), key)
        items.append({"key": key, "image": f"images/{key}.jpg", "mask": mask, "keypoints": keypoints.tolist(),
                      "meta": json.loads(raw["json"])})
    (files / ANNOTATIONS).write_text(json.dumps({"items": items}))
    log.info("benchmark set: %d samples (%d skipped) from %s", len(raws), skipped.total, cfg.data.root)
    return BenchSet(str(work / "shards"), str(files), raws)


def upload(local: BenchSet, storage: StorageConfig) -> BenchSet:
    """Put both layouts into the bucket of the S3 server `storage` points at → the same set under s3:// prefixes."""
    from reid3dsl.data.s3 import put_file, s3_client
    from shards.upload import upload as upload_shards

    s3_client(storage).create_bucket(Bucket=BUCKET)
    upload_shards(Path(local.shards), f"s3://{BUCKET}/shards", storage)
    files = [p for p in Path(local.files).rglob("*") if p.is_file()]
    for path in progress(files, "upload files", unit="file"):
        put_file(storage, path, f"s3://{BUCKET}/files/{path.relative_to(local.files).as_posix()}")
    return BenchSet(f"s3://{BUCKET}/shards", f"s3://{BUCKET}/files", local.raws)


def shard_loader(cfg: Config, storage: StorageConfig, root: str) -> Callable[[], Iterator[dict[str, Any]]]:
    """One pass of the pipeline's reader over the benchmark shards at `root` (reached through `storage`) → batches."""
    from reid3dsl.data.pipeline import eval_batches, per_rank_batch

    run_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": root}), "storage": storage})
    batch = per_rank_batch(cfg, cfg.cluster.num_workers)
    return lambda: eval_batches(run_cfg, SPLIT, 0, 1, batch)


def file_loader(
    cfg: Config, storage: StorageConfig, root: str, clothes: dict[str, int]
) -> Callable[[], Iterator[dict]]:
    """One pass of `FileFolder` at `root` through a DataLoader with the pipeline's workers, batch and transform."""
    from reid3dsl.data.pipeline import per_rank_batch

    dataset = FileFolder(root, storage)
    workers = cfg.data.loader_workers
    collate = functools.partial(_collate_files, cfg=cfg.data, clothes_to_index=clothes)

    def run() -> Iterator[dict[str, Any]]:
        return iter(DataLoader(dataset, batch_size=per_rank_batch(cfg, cfg.cluster.num_workers), shuffle=False,
                               num_workers=workers, collate_fn=collate, prefetch_factor=2 if workers else None))

    return run


def count(batches: Callable[[], Iterator[dict[str, Any]]]) -> Callable[[], int]:
    return lambda: sum(len(b["key"]) for b in batches())


def agreement(loaders: dict[str, Callable[[], Iterator[dict[str, Any]]]]) -> dict[str, Any]:
    """One pass of every loader: the same keys, labels and (to the last bit, or the largest difference) tensors."""
    seen: dict[str, dict[str, tuple[torch.Tensor, ...]]] = {}
    for name, batches in loaders.items():
        seen[name] = {}
        for b in batches():
            for i, key in enumerate(b["key"]):
                seen[name][key] = (b["image"][i], b["mask"][i], b["keypoints"][i],
                                   torch.stack([b["pid"][i], b["camid"][i], b["clothes"][i]]).float())
    first, *others = seen.values()
    same_keys = all(set(o) == set(first) for o in others)
    diff = max((float((a - b).abs().max()) for o in others for k in first.keys() & o.keys()
                for a, b in zip(first[k], o[k], strict=True)), default=float("nan"))
    return {"samples": {n: len(s) for n, s in seen.items()}, "same_keys": same_keys, "max_abs_diff": diff}


def measure(cfg: Config, work: Path, limit: int | None, repeats: int) -> tuple[dict[str, Any], list[Figure]]:
    """Build the benchmark set, start the S3 server, check agreement, time every reader → (details, figures)."""
    from moto.server import ThreadedMotoServer

    from reid3dsl.data.index import load_index
    from reid3dsl.data.reader import SkipCounter, iter_samples

    local = build(cfg, work, limit)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # moto takes any credentials, but boto3 and pyarrow read them from the environment (the config holds
    # none): fake ones for this process and the loader processes it starts, while the server runs.
    fake_credentials = mock.patch.dict(os.environ, {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    fake_credentials.start()
    try:
        host, port = server.get_host_and_port()
        s3 = cfg.storage.model_copy(update={"endpoint": f"http://{host}:{port}", "region": "us-east-1"})
        remote = upload(local, s3)
        shards = list(load_index(local.shards, cfg.storage).split(SPLIT).shards)
        clothes = load_index(local.shards, cfg.storage).clothes_to_index
        loaders = {
            "shards_local": shard_loader(cfg, cfg.storage, local.shards),
            "files_local": file_loader(cfg, cfg.storage, local.files, clothes),
            "shards_s3": shard_loader(cfg, s3, remote.shards),
            "files_s3": file_loader(cfg, s3, remote.files, clothes),
        }
        checked = agreement(loaders)
        log.info("agreement: %s", checked)
        raws = local.raws
        timed: dict[str, Callable[[], float]] = {n: functools.partial(rate, count(fn)) for n, fn in loaders.items()}
        timed["reader"] = functools.partial(
            rate, lambda: sum(1 for _ in iter_samples(shards, cfg.storage, SkipCounter()))
        )
        timed["decode"] = functools.partial(rate, lambda: sum(1 for raw in raws if decode_sample(raw)))
        timed["tar"] = functools.partial(rate, lambda: sum(1 for s in shards for _ in raw_samples(s.url)))
        load_before = load_avg()
        runs = rounds(timed, repeats)
        load_after = load_avg()
    finally:
        fake_credentials.stop()
        server.stop()
    sps = {name: median(values) for name, values in runs.items()}
    tar_share = sps["reader"] / sps["tar"]
    workers = cfg.data.loader_workers
    w = f"{workers} loader worker{'s' if workers != 1 else ''}"
    figures = [
        figure("data", f"shard loader, local ({w})", sps["shards_local"],
               "file-per-image loader (PIL + Dataset), local", sps["files_local"], "samples/s", (">=", 1.0)),
        figure("data", f"shard loader, S3 ({w})", sps["shards_s3"], "shard loader, local", sps["shards_local"],
               "samples/s", (">=", 0.8), note="moto S3 server on 127.0.0.1, in the benchmark's process"),
        figure("data", f"shard loader, S3 ({w})", sps["shards_s3"], "one GET per image + mask, S3", sps["files_s3"],
               "samples/s", (">=", 5.0)),
        figure("data", "shard reader (1 process)", sps["reader"], "decoding the same bytes in memory",
               sps["decode"], "samples/s", (">=", 0.8),
               note=f"tar iteration alone (webdataset on Python tarfile): {sps['tar']:.0f} samples/s, "
                    f"{100 * tar_share:.0f}% of the reader's time"),
    ]
    details = {
        "samples": len(raws), "source": cfg.data.root, "loader_workers": workers,
        "batch_size": cfg.train.batch_size // cfg.cluster.num_workers, "repeats": repeats,
        "load_avg_before": load_before, "load_avg_after": load_after,
        "agreement": checked, "samples_per_s": sps, "runs": runs,
    }
    return details, figures


# Largest difference allowed between the loaders' tensors: about 3 grey levels of an ImageNet-normalised image,
# room for two JPEG decoders (OpenCV's, PIL's) rounding differently; labels must agree exactly.
TOLERANCE = 0.05


def _check(details: dict[str, Any]) -> None:
    checked = details["agreement"]
    if (not checked["same_keys"] or len(set(checked["samples"].values())) != 1
            or not checked["max_abs_diff"] <= TOLERANCE):
        raise AssertionError(f"the loaders disagree on the same data: {checked}")


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.split("\n\n")[0])
    add_config_args(parser, default="configs/demo.yaml")
    parser.add_argument("--quick", action="store_true", help=f"at most {QUICK_SAMPLES} samples, 1 timed round")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to merge the results into")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise UserError("--repeats: expected an integer >= 1")
    setup_logging(None)
    from reid3dsl.train.driver import prepare

    info = machine()
    cfg = prepare(config_from_args(args))
    with tempfile.TemporaryDirectory(prefix="reid3dsl-bench-data-") as work:
        details, figures = measure(cfg, Path(work), QUICK_SAMPLES if args.quick else None,
                                   1 if args.quick else args.repeats)
    _check(details)
    print(f"data loading, {details['samples']} samples of {cfg.data.root}, batch {details['batch_size']}, "
          f"median of {details['repeats']} rounds — {info['cpu']}, {info['logical_cpus']} CPUs, load "
          f"{details['load_avg_before']:.1f} → {details['load_avg_after']:.1f}")
    print(table(figures))
    for f in figures:
        if f.note:
            print(f"  {f.name} vs {f.baseline}: {f.note}")
    merge_results(args.out, "data", details, info, figures)
    print(f"results: {args.out} (key 'data')", file=sys.stderr)


if __name__ == "__main__":
    main()
