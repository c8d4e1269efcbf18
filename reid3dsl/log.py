"""Logging, set up once per process: one format with a rank-aware prefix.

Call `setup_logging(rank)` at the start of every process (the driver with rank None, each Ray worker
with its world rank); modules use `logging.getLogger(__name__)`. Long work shows tqdm progress bars;
`progress(...)` is the one place that configures them (disabled on ranks other than 0).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_RANK: int | None = None
FORMAT = "%(asctime)s %(levelname).1s [%(rank)s] %(name)s: %(message)s"


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = "driver" if _RANK is None else f"rank {_RANK}"
        return True


def setup_logging(rank: int | None = None, level: int = logging.INFO) -> None:
    """Configure the root logger once for this process (idempotent; a new rank updates the prefix)."""
    global _RANK
    _RANK = rank
    root = logging.getLogger()
    if not any(getattr(h, "_reid3dsl", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(_RankFilter())
        handler._reid3dsl = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A tqdm progress bar over `items`, shown on the driver and rank 0 only."""
    return tqdm(items, desc=desc, total=total, unit=unit, disable=_RANK not in (None, 0), dynamic_ncols=True)
