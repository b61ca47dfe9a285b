"""A store built once per process, on first use.

Constructing a store opens its database and runs its migrations; a process builds each store
once and reuses it. Built on first use rather than at start, so that a process whose database
is down (PostgreSQL not there yet) still starts: a build that raises (``StoreUnavailable``) is
not kept, and the next use tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Once(Generic[T]):
    """``once()`` is ``build()`` the first time it succeeds, the same object ever after."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        value = self._value
        if value is not None:
            return value
        with self._lock:  # two first requests at once build it once
            if self._value is None:
                self._value = self._build()
            return self._value
