"""Reading shards back into `Sample`s, skipping and counting what is bad.

A shard is a local file or an s3:// object (`reid3dsl.data.s3.open_url`; never a webdataset `pipe:` or other
URL scheme), read as an uncompressed tar stream member by member and grouped into samples by webdataset's
`group_by_keys`. A member larger than its kind may be (`schema.member_limit`) is not read: a tar header, a
GNU sparse one above all, can claim any size in a few bytes. Whatever cannot be used — an unreadable shard
(after the retries of `storage.retries`), a truncated or corrupt tar, an oversized member, a sample that fails
to decode for any reason (MemoryError and RecursionError included) — is skipped, logged and counted in a
`SkipCounter`; with the per-shard counts of index.json, the samples lost after a truncation are counted too.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from reid3dsl import MAX_IMAGE_SIDE
from reid3dsl.config import StorageConfig
from reid3dsl.data.index import ShardInfo
from reid3dsl.data.s3 import open_url
from reid3dsl.data.schema import Sample, SampleError, decode_sample, member_limit

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


@dataclass(frozen=True)
class _Oversized:
    """Stands for a member that was not read because its header claims more bytes than its kind may hold."""

    size: int
    limit: int


class _EndGuard:
    """A read stream that raises on a second read at its end. Skipping a member, tarfile reads through the bytes
    its header claims, one empty read per 10 KB once the stream has ended: a header claiming 2**80 bytes would
    keep it reading nothing forever. Reading a whole tar reaches the end at most once."""

    def __init__(self, stream: BinaryIO, url: str) -> None:
        self._stream = stream
        self._url = url
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if not data and size:
            if self._ended:
                raise EOFError(f"{self._url}: a member claims more bytes than the shard holds")
            self._ended = True
        return data


def _members(stream: BinaryIO, url: str, max_side: int, errors: list[BaseException]) -> Iterator[dict[str, Any]]:
    """`{fname, data, __url__}` of every regular member of a tar stream, in order (what `group_by_keys` takes);
    an oversized member's data is an `_Oversized`. A broken tar ends the iteration, its error put in `errors`."""
    from webdataset.tariterators import base_plus_ext

    try:
        # "r|": an uncompressed stream, so a small compressed shard cannot inflate into a huge read.
        with tarfile.open(fileobj=_EndGuard(stream, url), mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                if not info.isreg():
                    continue
                ext = base_plus_ext(info.name)[1]
                limit = member_limit(ext and ext.lower(), max_side)
                if info.size > limit:  # for a sparse member, size is the expanded size
                    data: bytes | _Oversized = _Oversized(info.size, limit)
                else:
                    data = tar.extractfile(info).read()  # type: ignore[union-attr]
                yield {"fname": info.name, "data": data, "__url__": url}
    except Exception as exc:  # a truncated or corrupt tar, a read that failed after the retries
        errors.append(exc)


def _decode(raw: Mapping[str, Any], url: str, max_side: int) -> Sample | Skipped:
    """One grouped sample → `Sample`, or `Skipped` whatever went wrong."""
    key = raw.get("__key__") or "?"
    for ext, value in raw.items():
        if isinstance(value, _Oversized):
            return Skipped(f"{url}: sample '{key}': member '{ext}' is {value.size} bytes: expected at most "
                           f"{value.limit}")
    try:
        return decode_sample(raw, max_side)
    except SampleError as err:
        return Skipped(f"{url}: {err}")
    except Exception as err:  # MemoryError, RecursionError, a decoder's own error: one sample's loss, not the read's
        return Skipped(f"{url}: sample '{key}': could not be decoded ({type(err).__name__}: {err})")


def read_shard(
    shard: ShardInfo, storage: StorageConfig, max_side: int = MAX_IMAGE_SIDE
) -> Iterator[Sample | Skipped]:
    """Every stored position of one shard in order: a `Sample`, or a `Skipped` saying why not (images and masks
    with a side over `max_side`, data.max_image_side, are skipped from their headers).

    When the shard stops early (unreadable, truncated, corrupt header) and index.json gave its count, a
    final `Skipped` covers the samples lost, so positions stay aligned across readers of the same shard.
    """
    from webdataset.tariterators import group_by_keys

    errors: list[BaseException] = []

    def keep_going(exn: BaseException) -> bool:
        errors.append(exn)
        return True

    seen = 0
    try:
        stream = open_url(shard.url, storage)
    except Exception as exc:  # missing file, S3 error after retries
        errors.append(exc)
    else:
        with stream:
            for raw in group_by_keys(_members(stream, shard.url, max_side, errors), handler=keep_going):
                seen += 1
                yield _decode(raw, shard.url, max_side)
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
    shards: Sequence[ShardInfo],
    storage: StorageConfig,
    counter: SkipCounter,
    stride: int = 1,
    offset: int = 0,
    max_side: int = MAX_IMAGE_SIDE,
) -> Iterator[Sample]:
    """The good samples of `shards` in order, keeping stream positions i with i % stride == offset; every bad
    sample at a kept position is added to `counter` (so readers sharing shards never count one twice).
    `max_side`: data.max_image_side (see `read_shard`)."""
    position = 0
    for shard in shards:
        for item in read_shard(shard, storage, max_side):
            n = item.count if isinstance(item, Skipped) else 1
            mine = owned(position, n, stride, offset)
            position += n
            if not mine:
                continue
            if isinstance(item, Skipped):
                counter.add(mine, item.reason)
            else:
                yield item
