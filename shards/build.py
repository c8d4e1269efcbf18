"""`shards build`: a data set folder → shards + index.json, in parallel over worker processes.

The adapter lists the images with their labels; each worker reads an image, attaches keypoints (imported,
detected, or all missing) and a mask (GrabCut, a mask folder, or none) and returns the sample; the main
process writes them through `DatasetWriter` in a fixed random order (identities mixed across shards, the
same order every build). An image that cannot be read is skipped, logged and counted in index.json.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid3dsl.config import StorageConfig
from reid3dsl.data.s3 import is_s3, join_url
from reid3dsl.data.schema import Sample, SampleMeta, decode_image, missing_keypoints
from reid3dsl.data.writer import DatasetWriter
from reid3dsl.errors import UserError
from reid3dsl.log import progress
from shards.adapters import SourceImage, scan
from shards.masks import grabcut_mask, mask_from_folder

log = logging.getLogger(__name__)
CHUNK = 16
SHUFFLE_SEED = 0


@dataclass(frozen=True)
class BuildOptions:
    """What `shards build` was asked for (see `python -m shards build --help`)."""

    dataset: str
    root: Path
    out: str
    masks: str = "grabcut"  # "grabcut", "none", or a folder of mask files
    keypoints: str | None = None  # None, a COCO-style JSON path, or "detect"
    detector_weights: Path | None = None
    workers: int = 1
    shard_size: int = 1000
    name: str | None = None


class _Worker:
    """Per-process state: options, imported keypoints, the detector (loaded once per process)."""

    opts: BuildOptions
    keypoints: dict[str, np.ndarray]
    detector: Any = None

    @classmethod
    def setup(cls, opts: BuildOptions, keypoints: dict[str, np.ndarray], detector: Any, threads: int | None) -> None:
        cls.opts = opts
        cls.keypoints = keypoints
        cls.detector = detector  # forked workers share the parent's copy
        if threads is not None and detector is not None:
            import torch

            torch.set_num_threads(threads)

    @classmethod
    def make(cls, src: SourceImage) -> Sample | tuple[str, str]:
        """One source image → a `Sample`, or (relative path, reason) when it cannot be used."""
        opts = cls.opts
        try:
            data = src.path.read_bytes()
        except OSError as err:
            return src.rel, f"unreadable ({err.strerror or err})"
        image = decode_image(data)
        if image is None:
            return src.rel, "not a decodable image"
        if cls.detector is not None:
            kp = cls.detector(image)
        else:
            kp = cls.keypoints.get(src.rel, missing_keypoints())
        if opts.masks == "grabcut":
            mask = grabcut_mask(image, kp if (kp[:, 2] > 0).any() else None)
        elif opts.masks == "none":
            mask = None
        else:
            mask = mask_from_folder(Path(opts.masks), src.rel, image.shape[:2])
        meta = SampleMeta(src.pid, src.camid, src.clothes, opts.name or opts.dataset, src.split, src.rel)
        jpeg = data if data[:2] == b"\xff\xd8" else None  # keep original JPEG bytes, re-encode anything else
        return Sample(key=src.key, image=image, keypoints=kp, meta=meta, mask=mask, jpeg=jpeg)


def _check(opts: BuildOptions) -> None:
    if opts.workers < 1:
        raise UserError(f"--workers {opts.workers}: expected at least 1")
    if opts.shard_size < 1:
        raise UserError(f"--shard-size {opts.shard_size}: expected at least 1")
    if opts.masks not in ("grabcut", "none") and not Path(opts.masks).is_dir():
        raise UserError(f"--masks '{opts.masks}': expected grabcut, none, or a folder of mask files")
    if opts.keypoints == "detect" and opts.detector_weights is None:
        raise UserError("--keypoints detect: expected --detector-weights PATH (a local Keypoint R-CNN state dict)")
    if opts.detector_weights is not None and opts.keypoints != "detect":
        raise UserError("--detector-weights: only used with --keypoints detect")


def build(opts: BuildOptions, storage: StorageConfig) -> str:
    """Build the shards of one data set; returns the data set root (`<out>/<name>`, local or s3://)."""
    _check(opts)
    found = scan(opts.dataset, opts.root)
    # Data set folders are sorted by identity; shards must mix identities (a reader holding a few shards
    # still sees many identities for P x K batches), so images are written in a fixed random order.
    images = [found[i] for i in np.random.default_rng(SHUFFLE_SEED).permutation(len(found))]
    keypoints: dict[str, np.ndarray] = {}
    detector = None
    if opts.keypoints not in (None, "detect"):
        from shards.keypoints import load_keypoints

        keypoints = load_keypoints(Path(opts.keypoints), (im.rel for im in images))
    elif opts.keypoints == "detect":
        from shards.keypoints import KeypointDetector

        detector = KeypointDetector(opts.detector_weights)  # type: ignore[arg-type]
    name = opts.name or opts.dataset
    root = join_url(opts.out, name)
    if not is_s3(opts.out):
        Path(opts.out).mkdir(parents=True, exist_ok=True)
    log.info("building %s from %s: %d images → %s", name, opts.root, len(images), root)
    with DatasetWriter(root, name, storage, shard_size=opts.shard_size) as writer:
        if opts.workers == 1:
            _Worker.setup(opts, keypoints, detector, None)
            results = map(_Worker.make, images)
            _write_all(writer, progress(results, f"build {name}", total=len(images), unit="img"))
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(opts.workers, initializer=_Worker.setup, initargs=(opts, keypoints, detector, 1)) as pool:
                results = pool.imap(_Worker.make, images, chunksize=CHUNK)
                _write_all(writer, progress(results, f"build {name}", total=len(images), unit="img"))
    return root


def _write_all(writer: DatasetWriter, results: Any) -> None:
    for result in results:
        if isinstance(result, Sample):
            writer.write(result)
        else:
            writer.skip(*result)
