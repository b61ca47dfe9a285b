"""store.once.Once: a store is built once per process, and a failed build is tried again."""

from __future__ import annotations

import threading
import time

import pytest

from store.db import StoreUnavailable
from store.once import Once


def test_built_at_first_use_then_the_same_object() -> None:
    built: list[object] = []

    def build() -> object:
        built.append(object())
        return built[-1]

    once = Once(build)
    assert built == []  # nothing at construction
    first = once()
    assert once() is first and once() is first and built == [first]


def test_a_failed_build_is_not_kept_and_the_next_use_tries_again() -> None:
    answers: list[object] = [StoreUnavailable("down"), StoreUnavailable("down"), "store"]

    def build() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    once = Once(build)
    for _ in range(2):
        with pytest.raises(StoreUnavailable, match="down"):
            once()
    assert once() == "store" and once() == "store" and answers == []


def test_concurrent_first_uses_build_once() -> None:
    calls: list[int] = []

    def slow_build() -> list[int]:
        calls.append(1)
        time.sleep(0.05)
        return calls

    once = Once(slow_build)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(once())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and len(got) == 8 and all(g is calls for g in got)
