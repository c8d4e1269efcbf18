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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (test runners and notebooks replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        del value


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = "driver" if _RANK is None else f"rank {_RANK}"
        return True


def setup_logging(rank: int | None = None, level: int = logging.INFO) -> None:
    """Configure the project's loggers (`reid3dsl`, `shards`) once per process; a new rank updates the prefix.

    Only the project's own loggers get this handler (and stop propagating), so libraries that configure the
    root logger themselves — Ray workers do — neither duplicate our lines nor get theirs reformatted."""
    global _RANK
    _RANK = rank
    for name in ("reid3dsl", "shards", "__main__"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "_reid3dsl", False) for h in logger.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
            handler.addFilter(_RankFilter())
            handler._reid3dsl = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A tqdm progress bar over `items`, shown on the driver and rank 0 only."""
    return tqdm(items, desc=desc, total=total, unit=unit, disable=_RANK not in (None, 0), dynamic_ncols=True)
