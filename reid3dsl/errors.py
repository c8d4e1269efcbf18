"""User-facing errors and the command-line convention that reports them.

Anything a user can get wrong (a config value, a missing file, a folder with the wrong layout) raises
`UserError` with one line naming the thing and what was expected. Every CLI wraps its `main` in
`cli_main`, which prints that line to stderr and exits with status 2 — never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """An input problem the user can fix; its message is one line and is shown as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def cli_main(func: F) -> F:
    """Run a CLI entry point; a `UserError` becomes one line on stderr and exit status 2."""

    @wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]
