"""Reading shards back into `Sample`s with webdataset's tar iterators, skipping and counting what is bad.

A shard is opened through `webdataset.gopen` (local path, or s3:// via the scheme `reid3dsl.data.s3`
registers), expanded by `tar_file_expander` and grouped by `group_by_keys`. Whatever cannot be used — an
unreadable shard (after the retries of `storage.retries`), a truncated or corrupt tar member, an
undecodable image, a malformed json — is skipped, logged and counted in a `SkipCounter`; with the
per-shard counts of index.json, the samples lost after a truncation are counted too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from reid3dsl.config import StorageConfig
from reid3dsl.data.index import ShardInfo
from reid3dsl.data.s3 import register_s3_scheme
from reid3dsl.data.schema import Sample, SampleError, decode_sample

log = logging.getLogger(__name__)
DETAILED_WARNINGS = 20


@dataclass
class SkipCounter:
    """Samples skipped by this process: `total` ever, and `take()` → how many since the previous take."""

    total: int = 0
    _taken: int = 0
    _warned: int = 0

    def add(self, n: int, reason: str) -> None:
        self.total += n
        # Every event is counted; the first few are logged in full, then one line per 1000 samples.
        if self._warned < DETAILED_WARNINGS:
            self._warned += 1
            log.warning("skipped %d sample(s): %s", n, reason)
        elif self.total // 1000 != (self.total - n) // 1000:
            log.warning("%d samples skipped so far in this process", self.total)

    def take(self) -> int:
        delta = self.total - self._taken
        self._taken = self.total
        return delta


@dataclass(frozen=True)
class Skipped:
    """`count` consecutive stored samples that cannot be used, and why."""

    reason: str
    count: int = 1


def read_shard(shard: ShardInfo, storage: StorageConfig) -> Iterator[Sample | Skipped]:
    """Every stored position of one shard in order: a `Sample`, or a `Skipped` saying why not.

    When the shard stops early (unreadable, truncated, corrupt header) and index.json gave its count, a
    final `Skipped` covers the samples lost, so positions stay aligned across readers of the same shard.
    """
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    register_s3_scheme(storage)
    errors: list[BaseException] = []

    def keep_going(exn: BaseException) -> bool:
        errors.append(exn)
        return True

    seen = 0
    try:
        stream = wds.gopen(shard.url)
    except Exception as exc:  # missing file, S3 error after retries
        errors.append(exc)
    else:
        with stream:
            files = tar_file_expander([{"url": shard.url, "stream": stream}], handler=keep_going)
            for raw in group_by_keys(files, handler=keep_going):
                seen += 1
                try:
                    yield decode_sample(raw)
                except SampleError as err:
                    yield Skipped(f"{shard.url}: {err}")
    if shard.count is not None:
        lost = shard.count - seen
    else:
        lost = 1 if errors and seen == 0 else 0
    if lost > 0:
        why = f"{type(errors[0]).__name__}: {errors[0]}" if errors else "fewer samples than index.json lists"
        yield Skipped(f"{shard.url}: {lost} sample(s) lost ({why})", lost)
    elif errors:
        log.warning("%s: read error after all samples (%s)", shard.url, errors[0])


def owned(position: int, count: int, stride: int, offset: int) -> int:
    """How many of the stream positions [position, position + count) satisfy i % stride == offset."""
    return len(range(position + (offset - position) % stride, position + count, stride))


def iter_samples(
    shards: Sequence[ShardInfo], storage: StorageConfig, counter: SkipCounter, stride: int = 1, offset: int = 0
) -> Iterator[Sample]:
    """The good samples of `shards` in order, keeping stream positions i with i % stride == offset; every bad
    sample at a kept position is added to `counter` (so readers sharing shards never count one twice)."""
    position = 0
    for shard in shards:
        for item in read_shard(shard, storage):
            n = item.count if isinstance(item, Skipped) else 1
            mine = owned(position, n, stride, offset)
            position += n
            if not mine:
                continue
            if isinstance(item, Skipped):
                counter.add(mine, item.reason)
            else:
                yield item
