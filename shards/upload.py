"""`shards upload DIR s3://bucket/prefix`: copy a local shard folder to S3, keeping relative paths.

Every index.json is uploaded after all other files, so a reader that finds an index finds its shards.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reid3dsl.config import StorageConfig
from reid3dsl.data.index import INDEX_NAME
from reid3dsl.data.s3 import is_s3, join_url, parse_s3_url, put_file
from reid3dsl.errors import UserError
from reid3dsl.log import progress

log = logging.getLogger(__name__)


def upload(src: Path, dest: str, storage: StorageConfig) -> int:
    """Upload every file under `src` (a data set folder or a folder of them) to `dest`; returns the count."""
    if not is_s3(dest):
        raise UserError(f"upload destination '{dest}': expected s3://bucket/prefix")
    parse_s3_url(dest)
    if not src.is_dir():
        raise UserError(f"upload source '{src}': expected a folder of shards (written by shards build or synth)")
    files = sorted(
        p for p in src.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(src).parts)
    )
    if not any(p.name == INDEX_NAME for p in files):
        raise UserError(f"upload source '{src}': no {INDEX_NAME} inside (expected a shards build/synth output)")
    files.sort(key=lambda p: p.name == INDEX_NAME)  # stable: indexes last
    for path in progress(files, "upload", total=len(files), unit="file"):
        put_file(storage, path, join_url(dest, path.relative_to(src).as_posix()))
    log.info("uploaded %d files from %s to %s", len(files), src, dest)
    return len(files)
