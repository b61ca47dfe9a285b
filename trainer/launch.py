"""Launching data-parallel runs with torchrun (``python -m torch.distributed.run``).

Torch-free: the command line and the worker build launch commands without importing torch;
the ranks themselves join the process group in trainer.distributed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

#: Seconds a rank waits for the others in a collective before the run fails (a hung rank):
#: the default of ``specrec-train --dist-timeout-s`` and of the worker's ``dist_timeout_s``.
DEFAULT_TIMEOUT_S = 120.0


def torchrun_command(nproc: int, target: Sequence[str], options: Sequence[str] = ()) -> list[str]:
    """torchrun on this machine (c10d rendezvous on a free local port) running `target`
    (``["-m", module, *args]`` or ``[script, *args]``) in `nproc` processes, with torchrun's
    own `options` (e.g. ``--log-dir``)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        *options,
        *target,
    ]


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without ``option VALUE`` / ``option=VALUE`` (the launch's own option, which the
    ranks must not see: torchrun would also read it as its own)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def rank_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The ranks' environment: `base` (default os.environ) with one OpenMP thread per rank
    unless set (what torchrun would pick, said once here instead of a warning per run), and
    Python's faulthandler on, so that a rank killed by a fatal signal (SIGABRT from a C++
    exception, SIGSEGV) prints where it was."""
    env = dict(os.environ if base is None else base)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


def run_torchrun(nproc: int, target: Sequence[str]) -> int:
    """Run `target` in `nproc` ranks and wait; torchrun's exit status (0 when every rank
    succeeded; when one fails it stops the others and exits 1 with a summary on stderr)."""
    return subprocess.run(torchrun_command(nproc, target), env=rank_env(), check=False).returncode
