"""Named sections of a training step, for profilers and benchmarks.

`section(name)` marks a code path as a `torch.profiler` range (free when no profiler runs) and tells the
observers registered with `observe` when it is entered and left, so a benchmark can time the same paths
without patching the code. The names are `SECTIONS`; nested sections own their own time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch

SECTIONS = ("backbones", "heads", "losses", "smpl", "renderer", "discriminator", "optimizer")


class Observer(Protocol):
    def enter(self, name: str) -> None: ...

    def leave(self) -> None: ...


_observers: list[Observer] = []


@contextlib.contextmanager
def section(name: str) -> Iterator[None]:
    """A profiler range called `name` (one of SECTIONS) around the body, reported to the observers."""
    with torch.profiler.record_function(name):
        if not _observers:
            yield
            return
        for o in _observers:
            o.enter(name)
        try:
            yield
        finally:
            for o in reversed(_observers):
                o.leave()


@contextlib.contextmanager
def observe(observer: Observer) -> Iterator[None]:
    """Report every `section` entered and left inside to `observer`."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)
