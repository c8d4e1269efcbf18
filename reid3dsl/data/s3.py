"""S3 access for shards and checkpoints, from the `storage` config section: one boto3 client per process,
webdataset's `s3` gopen scheme, reads that retry with backoff and resume where they broke, put/list helpers,
and the pyarrow S3 filesystem Ray Train stores checkpoints in (built from the same settings).

Credentials are never configured: boto3 and pyarrow take them from the standard AWS chain (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN in the environment, ~/.aws, the instance's identity). Endpoint:
`storage.endpoint` (the config loader fills it from AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL), so MinIO, moto or
any S3-compatible server works.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlparse

from reid3dsl.config import StorageConfig
from reid3dsl.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Client errors that retrying cannot fix: the object or bucket is not there or not ours.
PERMANENT_CODES = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "404", "403", "InvalidRange"}
MAX_BACKOFF_S = 30.0
READ_BUFFER = 1 << 20

_clients: dict[tuple[Any, ...], Any] = {}


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key/with/slashes` → (bucket, key); the key may be empty (a bucket root)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise UserError(f"S3 URL '{url}': expected s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


def join_url(base: str, *parts: str) -> str:
    """Join a local folder or an s3:// prefix with relative parts."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def s3_client(cfg: StorageConfig) -> Any:
    """The boto3 S3 client for these settings, one per process (boto3 clients do not survive a fork)."""
    cache_key = (os.getpid(), cfg.endpoint, cfg.region)
    client = _clients.get(cache_key)
    if client is None:
        import boto3
        from botocore.config import Config as BotoConfig

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=cfg.endpoint,
            region_name=cfg.region,
            # Retries are ours (`retry`, storage.retries): botocore retrying too would multiply the attempts.
            config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}),
        )
        _clients[cache_key] = client
    return client


def _permanent(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in PERMANENT_CODES


def backoff_s(cfg: StorageConfig, attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1-based): exponential from storage.backoff."""
    return min(MAX_BACKOFF_S, cfg.backoff * 2 ** (attempt - 1))


def retry(
    op: Callable[[], T], retries: int, wait: Callable[[int], float], what: str, reset: Callable[[], None] | None = None
) -> T:
    """`op()`, retried up to `retries` times after `wait(attempt)` seconds; errors that retrying cannot fix
    (a missing object, denied access) and the last error are raised. `reset` runs after every failure."""
    attempt = 0
    while True:
        try:
            return op()
        except Exception as exc:  # network and server errors of any client library
            if reset is not None:
                reset()
            attempt += 1
            if attempt > retries or _permanent(exc):
                raise
            delay = wait(attempt)
            log.warning("%s failed (%s); retry %d of %d in %.1fs", what, exc, attempt, retries, delay)
            time.sleep(delay)


class RetryingReader(io.RawIOBase):
    """A read-only stream over `fetch(offset)` bodies that reopens at the current offset when a read fails.

    `fetch(offset)` returns a file-like object positioned at `offset` (for S3: a ranged GET). A broken
    connection mid-shard costs one ranged request, not the shard; after `retries` failed attempts in a row
    the last error is raised and the caller skips and counts the shard.
    """

    def __init__(self, fetch: Callable[[int], Any], retries: int, wait: Callable[[int], float], name: str) -> None:
        super().__init__()
        self._fetch = fetch
        self._retries = retries
        self._wait = wait
        self.name = name
        self._pos = 0
        self._body: Any = None
        self._call(self._open)

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        if self._body is None:
            self._body = self._fetch(self._pos)

    def _drop(self) -> None:
        self._body = None

    def _call(self, op: Callable[[], T]) -> T:
        return retry(op, self._retries, self._wait, f"read of {self.name} at byte {self._pos}", self._drop)

    def _read(self, n: int) -> bytes:
        self._open()
        return self._body.read(n)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._call(lambda: self._read(len(view)))
        n = len(data)
        view[:n] = data
        self._pos += n
        return n

    def close(self) -> None:
        if self._body is not None and hasattr(self._body, "close"):
            self._body.close()
        self._body = None
        super().close()


def open_s3(url: str, cfg: StorageConfig) -> BinaryIO:
    """A buffered, retrying read stream of the object at `url`."""
    bucket, key = parse_s3_url(url)
    client = s3_client(cfg)

    def fetch(offset: int) -> Any:
        from botocore.exceptions import ClientError

        if not offset:
            return client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            return client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-")["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # broke exactly at the end
                return io.BytesIO(b"")
            raise

    raw = RetryingReader(fetch, cfg.retries, lambda attempt: backoff_s(cfg, attempt), url)
    return io.BufferedReader(raw, buffer_size=READ_BUFFER)  # type: ignore[return-value]


def register_s3_scheme(cfg: StorageConfig) -> None:
    """Make `webdataset.gopen` (and so `webdataset.WebDataset`) open `s3://` URLs through `open_s3`."""
    from webdataset.gopen import gopen_schemes

    def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> BinaryIO:
        if mode != "rb":
            raise ValueError(f"{url}: the s3 scheme is read-only (write with reid3dsl.data.s3.put_file)")
        return open_s3(url, cfg)

    gopen_schemes["s3"] = gopen_s3


def open_url(url: str, cfg: StorageConfig) -> BinaryIO:
    """Open a local path or s3:// URL for reading."""
    return open_s3(url, cfg) if is_s3(url) else open(url, "rb")  # noqa: SIM115 (caller closes)


def read_bytes(url: str, cfg: StorageConfig) -> bytes:
    with open_url(url, cfg) as stream:
        return stream.read()


def _retry_s3(cfg: StorageConfig, op: Callable[[], T], what: str) -> T:
    return retry(op, cfg.retries, lambda attempt: backoff_s(cfg, attempt), what)


def put_file(cfg: StorageConfig, path: str | Path, url: str) -> None:
    """Upload one local file to `url` (multipart for large files; S3 objects appear atomically)."""
    bucket, key = parse_s3_url(url)
    _retry_s3(cfg, lambda: s3_client(cfg).upload_file(str(path), bucket, key), f"upload of {url}")


def put_bytes(cfg: StorageConfig, data: bytes, url: str) -> None:
    bucket, key = parse_s3_url(url)
    _retry_s3(cfg, lambda: s3_client(cfg).put_object(Bucket=bucket, Key=key, Body=data), f"upload of {url}")


def list_urls(cfg: StorageConfig, prefix_url: str) -> list[str]:
    """Every object URL under the prefix (all pages), sorted."""
    bucket, prefix = parse_s3_url(prefix_url)

    def listing() -> list[str]:
        paginator = s3_client(cfg).get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        return sorted(f"s3://{bucket}/{obj['Key']}" for page in pages for obj in page.get("Contents", []))

    return _retry_s3(cfg, listing, f"listing of {prefix_url}")


def pyarrow_s3_filesystem(cfg: StorageConfig) -> Any:
    """`pyarrow.fs.S3FileSystem` from the same settings as `s3_client` (for Ray Train's storage_filesystem).

    pyarrow ignores AWS_ENDPOINT_URL*, so the endpoint is passed as `endpoint_override`; paths given to it are
    `bucket/prefix`, without `s3://`.
    """
    from pyarrow import fs

    kwargs: dict[str, Any] = {"retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=cfg.retries + 1)}
    if cfg.endpoint:
        parsed = urlparse(cfg.endpoint if "://" in cfg.endpoint else f"https://{cfg.endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    if cfg.region:
        kwargs["region"] = cfg.region
    return fs.S3FileSystem(**kwargs)
