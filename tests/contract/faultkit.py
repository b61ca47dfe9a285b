"""Fault injection at the os level for registry tests: count, fail or crash at the N-th call.

`Faults(root)` wraps ``os.open``, ``os.mkdir``, ``os.write``, ``os.fsync``, ``os.rename`` and
``os.replace`` (the calls through which contract.artifact and tempfile create, write, sync and
rename anything) and records every call that touches `root` as a `Point` (except a mkdir of an
existing directory: that fails with EEXIST before it could need space). With ``at=N`` the N-th
such call (0-based) gets `action` instead: raise ENOSPC, or SIGKILL the process before the call,
or (for a write) after writing half of its bytes. No pytest here: crash children import it too.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.artifact import ModelArrays, ModelRegistry

OPS = ("open", "mkdir", "write", "fsync", "rename", "replace")
_VERSION = re.compile(r"v\d{8}T\d{6}-\d{3}")
_TMP_DIR = re.compile(r"\.tmp-V-[^/]+")
_TMP_POINTER = re.compile(r"\.CURRENT-[^/]+")


@dataclass(frozen=True)
class Point:
    """One os call on the registry: op and path(s) relative to the root, random parts masked
    (``.tmp`` for a publish's temporary directory, ``V`` for a version, ``.CURRENT-tmp``)."""

    op: str
    path: str

    def __str__(self) -> str:
        return f"{self.op}:{self.path}"


def tiny_arrays(seed: int, m: int = 5, n: int = 7, d: int = 3) -> ModelArrays:
    """A few hundred bytes of model; `seed` changes every array a test compares."""
    rng = np.random.default_rng(seed)
    return ModelArrays.build(
        rng.normal(size=(m, d)),
        rng.normal(size=(n, d)),
        [f"user_{seed}_{i}" for i in range(m)],
        [f"item_{seed}_{i}" for i in range(n)],
        (np.array([0, 1, 1, 4]), np.array([2, 0, 6, seed % n])),
    )


class Faults:
    """Context manager: install the wrappers on `os`, restore the originals on exit."""

    def __init__(self, root: Path, at: int | None = None, action: str = "enospc") -> None:
        assert action in ("enospc", "kill", "torn"), action
        self.root = os.path.realpath(root)
        self.at, self.action = at, action
        self.points: list[Point] = []
        self.hit: Point | None = None
        self._orig = {op: getattr(os, op) for op in OPS}

    def __enter__(self) -> Faults:
        for op in OPS:
            setattr(os, op, self._wrap(op))
        return self

    def __exit__(self, *_: object) -> None:
        for op, fn in self._orig.items():
            setattr(os, op, fn)

    def _rel(self, path: Any) -> str | None:
        real = os.path.realpath(os.fspath(path))
        if real != self.root and not real.startswith(self.root + os.sep):
            return None
        rel = os.path.relpath(real, self.root)
        rel = _VERSION.sub("V", rel)
        return _TMP_POINTER.sub(".CURRENT-tmp", _TMP_DIR.sub(".tmp", rel))

    def _target(self, op: str, args: tuple[Any, ...]) -> str | None:
        if op in ("write", "fsync"):
            return self._rel(os.readlink(f"/proc/self/fd/{args[0]}"))
        if op in ("rename", "replace"):
            src, dst = self._rel(args[0]), self._rel(args[1])
            return None if src is None else f"{src}>{dst}"
        return self._rel(args[0])

    def _wrap(self, op: str) -> Any:
        orig = self._orig[op]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = self._target(op, args)
            if target is None or (op == "mkdir" and os.path.isdir(args[0])):
                return orig(*args, **kwargs)  # not ours, or EEXIST before any space is needed
            n = len(self.points)
            self.points.append(Point(op, target))
            if n != self.at:
                return orig(*args, **kwargs)
            self.hit = self.points[-1]
            if self.action == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
            if self.action == "torn" and op == "write":
                data = memoryview(args[1]).cast("B")
                self._orig["write"](args[0], data[: max(len(data) // 2, 1)])
            os.kill(os.getpid(), signal.SIGKILL)
            raise AssertionError("unreachable: SIGKILL")

        return wrapper


def record_publish(root: Path, seed: int = 2) -> list[Point]:
    """The os calls of publishing `tiny_arrays(seed)` into the registry at `root`."""
    with Faults(root) as f:
        ModelRegistry(root).publish(tiny_arrays(seed), config={"seed": seed})
    return f.points


def crash_child(root: str, at: str, action: str) -> None:
    """Entry point of a crash subprocess: publish seed 2 and die at call `at`."""
    with Faults(Path(root), at=int(at), action=action):
        ModelRegistry(root).publish(tiny_arrays(2), config={"seed": 2})
    sys.exit(3)  # the fault was never reached


if __name__ == "__main__":
    crash_child(*sys.argv[1:4])
