"""Writing one data set in the shard format: `<root>/<split>-NNNNNN.tar` through `webdataset.ShardWriter`,
then `<root>/index.json`, locally or under an s3:// prefix.

Local writes are atomic: everything goes into a hidden temp folder beside `root`, renamed into place when
complete (a reader never sees half a data set; two writers racing for the same root cannot mix files). On
S3 each shard is uploaded as soon as it is closed and index.json last, so an index always names complete
shards.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from types import TracebackType
from typing import Any

from reid3dsl.config import StorageConfig
from reid3dsl.data.index import INDEX_NAME, index_to_json
from reid3dsl.data.s3 import is_s3, join_url, put_bytes, put_file
from reid3dsl.data.schema import MASK_EXT, SPLITS, Sample, encode_sample
from reid3dsl.errors import UserError

log = logging.getLogger(__name__)
MAX_SKIPPED_EXAMPLES = 20


class _SplitStats:
    def __init__(self) -> None:
        self.count = 0
        self.identities: set[int] = set()
        self.cameras: set[int] = set()
        self.clothes: set[str] = set()
        self.shards: list[dict[str, Any]] = []


class DatasetWriter:
    """Write samples of one data set into shards + index.json under `root` (a folder or s3:// prefix).

    Use as a context manager: `write(sample)` for each crop, `skip(source, reason)` for a source image that
    could not be used; on a clean exit the data set is committed, on an exception the temp files are removed.
    `replace=False` makes committing onto an existing local data set raise `FileExistsError` (the caller
    that lost a race keeps the winner's copy).
    """

    def __init__(
        self, root: str, dataset: str, cfg: StorageConfig, shard_size: int = 1000, replace: bool = True
    ) -> None:
        if shard_size < 1:
            raise UserError(f"shard size {shard_size}: expected at least 1 sample per shard")
        self.root = root
        self.dataset = dataset
        self.cfg = cfg
        self.shard_size = shard_size
        self.replace = replace
        self.with_masks = 0
        self.with_keypoints = 0
        self.skipped: list[str] = []
        self._stats: dict[str, _SplitStats] = defaultdict(_SplitStats)
        self._writers: dict[str, Any] = {}
        self._keys: set[str] = set()
        if is_s3(root):
            self._tmp = Path(tempfile.mkdtemp(prefix="reid3dsl-shards-"))
        else:
            parent = Path(root).parent
            parent.mkdir(parents=True, exist_ok=True)
            self._tmp = parent / f".{Path(root).name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._tmp.mkdir()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _writer(self, split: str) -> Any:
        if split not in self._writers:
            import webdataset as wds

            stats = self._stats[split]
            holder: dict[str, Any] = {}

            def shard_done(fname: str) -> None:
                # ShardWriter calls this after closing a shard, before resetting its count.
                name = Path(fname).name
                stats.shards.append({"name": name, "count": holder["writer"].count})
                if is_s3(self.root):
                    put_file(self.cfg, fname, join_url(self.root, name))
                    os.unlink(fname)

            # An integer mtime: webdataset's default (the float time) costs every member a PAX header that
            # makes shards a third larger and halves the reader's tar iteration speed (bench/data.py).
            holder["writer"] = wds.ShardWriter(
                str(self._tmp / f"{split}-%06d.tar"), maxcount=self.shard_size, post=shard_done, verbose=0,
                mtime=int(time.time()),
            )
            self._writers[split] = holder["writer"]
        return self._writers[split]

    def write(self, sample: Sample) -> None:
        """Add one sample to its split's shards (a bad field is a one-line UserError naming key and field)."""
        record = encode_sample(sample)
        meta = sample.meta
        if meta.split not in SPLITS:
            raise UserError(f"sample '{sample.key}': json field 'split' = {meta.split!r}: expected one of {SPLITS}")
        if meta.dataset != self.dataset:
            raise UserError(
                f"sample '{sample.key}': json field 'dataset' = {meta.dataset!r}: expected {self.dataset!r}"
            )
        if sample.key in self._keys:
            raise UserError(f"sample key '{sample.key}' ({meta.source}): expected keys unique within the data set")
        self._keys.add(sample.key)
        self._writer(meta.split).write(record)
        stats = self._stats[meta.split]
        stats.count += 1
        stats.identities.add(meta.pid)
        stats.cameras.add(meta.camid)
        if meta.clothes is not None:
            stats.clothes.add(meta.clothes)
        self.with_masks += MASK_EXT in record
        self.with_keypoints += bool((sample.keypoints[:, 2] > 0).any())

    def add_file(self, name: str, data: bytes) -> None:
        """An extra file beside index.json (e.g. the recipe a data set was made from), committed with it."""
        if "/" in name or name == INDEX_NAME or name.endswith(".tar"):
            raise ValueError(f"extra file name {name!r}: expected a plain name that is not a shard or the index")
        if is_s3(self.root):
            put_bytes(self.cfg, data, join_url(self.root, name))
        else:
            (self._tmp / name).write_bytes(data)

    def skip(self, source: str, reason: str) -> None:
        """Record a source image that could not be turned into a sample (logged, counted in index.json)."""
        log.warning("skipped %s: %s", source, reason)
        self.skipped.append(f"{source}: {reason}")

    def close(self) -> str:
        """Finish the shards, write index.json and move the data set into place; returns `root`."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if not self._stats:
            self.abort()
            raise UserError(f"data set '{self.root}': no samples to write")
        splits = {
            name: {
                "count": s.count,
                "identities": sorted(s.identities),
                "cameras": sorted(s.cameras),
                "clothes": sorted(s.clothes),
                "shards": s.shards,
            }
            for name, s in self._stats.items()
        }
        index = index_to_json(
            self.dataset,
            splits,
            self.with_masks,
            self.with_keypoints,
            len(self.skipped),
            self.skipped[:MAX_SKIPPED_EXAMPLES],
        )
        if is_s3(self.root):
            put_bytes(self.cfg, index, join_url(self.root, INDEX_NAME))
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            (self._tmp / INDEX_NAME).write_bytes(index)
            self._commit_local()
        log.info(
            "wrote %s: %s (%d skipped)",
            self.root,
            ", ".join(f"{n} {s.count}" for n, s in self._stats.items()),
            len(self.skipped),
        )
        return self.root

    def _commit_local(self) -> None:
        root = Path(self.root)
        try:
            os.rename(self._tmp, root)  # atomic; fails if root exists and is not empty
            return
        except OSError:
            if not self.replace:
                shutil.rmtree(self._tmp, ignore_errors=True)
                raise FileExistsError(str(root)) from None
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(root, old)
        os.rename(self._tmp, root)
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far (nothing under a local root is touched)."""
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:  # already failing; the temp folder goes anyway
                pass
        self._writers.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)
