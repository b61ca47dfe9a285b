"""Training checkpoints: what fit() needs to continue a run exactly where it stopped.

A checkpoint is one torch file, ``epoch-000012.pt``, in the checkpoint directory. It holds
the encoder's parameters, the optimiser's state (RowAdam's deferred rows and step counters
included), the learning-rate schedule, the random generators of every rank (the sampler's and
torch's global ones), the epoch, the evaluation history and the embeddings kept for the
result, plus the run's config, dataset fingerprint and world size, which a resumed run must
match. It is written atomically (a temporary file in the same directory, fsync, os.replace,
fsync of the directory): a crash while writing leaves the previous checkpoint as it was. The
newest ``keep`` checkpoints are kept. Files are read with ``weights_only=True``: tensors and
plain values only, never pickled code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.artifact import write_file_atomic
from contract.config import TrainConfig

#: Bumped when the file's layout changes; other versions are refused.
FORMAT = 1
_NAME = re.compile(r"^epoch-(\d{6,})\.pt$")


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another run (config, dataset or world size); the message
    names what differs."""


@dataclass(frozen=True)
class CheckpointOptions:
    """Where and how often fit() writes checkpoints, and whether it resumes from one."""

    directory: Path
    every: int = 1  # epochs between checkpoints; 0: never write
    resume: bool = False  # continue from the latest checkpoint in `directory` (if any)
    keep: int = 2  # newest checkpoints kept

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"checkpoint every: {self.every!r}, expected >= 0")
        if self.keep < 1:
            raise ValueError(f"checkpoint keep: {self.keep!r}, expected >= 1")


@dataclass
class TrainState:
    """A run's state after `epoch` (see the module docstring). Tensors are on the CPU."""

    epoch: int
    config: dict[str, Any]  # TrainConfig.to_dict()
    dataset_fingerprint: str
    world_size: int
    encoder: dict[str, torch.Tensor]  # encoder.state_dict()
    optimizer: dict[str, Any]  # optimizer.state_dict()
    scheduler: dict[str, Any]  # lr scheduler's state_dict()
    rng: list[dict[str, torch.Tensor]]  # per rank: generator name -> get_state()
    progress: dict[str, Any]  # JSON-ready: history, last metrics, early-stopping counters
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)  # kept embeddings


def to_cpu(value: Any) -> Any:
    """`value` with every tensor in it (dicts, lists, tuples) copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-ready: {type(value).__name__}")


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch:06d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in `directory`, oldest first ([] if none or no dir)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint in `directory`, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(state: TrainState, directory: Path, keep: int = 2) -> Path:
    """Write `state` atomically as ``directory/epoch-NNNNNN.pt``; delete all but the newest
    `keep` checkpoints; return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
    payload["format"] = FORMAT
    payload["progress"] = json.dumps(state.progress, default=_plain)
    path = checkpoint_path(directory, state.epoch)
    write_file_atomic(path, lambda f: torch.save(payload, f))
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> TrainState:
    """The TrainState in `path` (CPU tensors); ValueError for a file of another format."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    version = payload.pop("format", None) if isinstance(payload, dict) else None
    if version != FORMAT:
        raise ValueError(f"{path}: checkpoint format {version!r}, expected {FORMAT}")
    payload["progress"] = json.loads(payload["progress"])
    return TrainState(**payload)


def check_compatible(
    state: TrainState, config: Mapping[str, Any], fingerprint: str, world_size: int
) -> None:
    """Raise CheckpointMismatch unless `state` was written by a run with this config, dataset
    and number of ranks. A field the checkpoint's config lacks (added to TrainConfig after it
    was written) counts as that field's default."""
    problems = []
    known = TrainConfig.model_fields

    def recorded(k: str) -> Any:
        if k in state.config or k not in known:
            return state.config.get(k)
        return known[k].default

    changed = sorted(k for k in set(config) | set(state.config) if config.get(k) != recorded(k))
    if changed:
        problems.append(
            "config differs in "
            + ", ".join(f"{k} ({recorded(k)!r} -> {config.get(k)!r})" for k in changed)
        )
    if fingerprint != state.dataset_fingerprint:
        problems.append("the dataset differs (fingerprint)")
    if world_size != state.world_size:
        problems.append(
            f"it was written by {state.world_size} rank(s), this run has {world_size} "
            "(each rank draws from its own generator: resume with the same number of ranks)"
        )
    if problems:
        raise CheckpointMismatch(
            f"cannot resume from the epoch-{state.epoch} checkpoint: " + "; ".join(problems)
        )


def remove_checkpoints(directory: Path) -> None:
    """Delete the checkpoints (and stray temporary files) in `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        if _NAME.match(p.name) or (p.name.startswith(".epoch-") and p.name.endswith(".tmp")):
            p.unlink(missing_ok=True)
