"""The one place that picks the torch device.

Order: the explicit argument, then the environment variable ``SPECREC_DEVICE``, then CUDA if
available, then CPU. "auto" (or empty) at either level means "decide for me".
"""

from __future__ import annotations

import os
import re

import torch

ENV_VAR = "SPECREC_DEVICE"
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


class DeviceError(ValueError):
    """A requested device that is malformed or not available here."""


def pick_device(explicit: str | None = None) -> torch.device:
    """Resolve the training device; raise DeviceError if a requested one is unusable."""
    for source, value in (("device", explicit), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value is None or value.strip().lower() in ("", "auto"):
            continue
        return _check(value.strip().lower(), source)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _check(name: str, source: str) -> torch.device:
    if not _DEVICE_RE.match(name):
        raise DeviceError(f"{source}: {name!r}, expected auto, cpu, cuda, cuda:N or mps")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{source}: {name!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{source}: {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{source}: 'mps' requested but MPS is not available here")
    return dev
