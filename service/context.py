"""The per-app objects every route needs, built by create_app and reached via request.app."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contract.artifact import ModelRegistry
from service.batcher import SearchBatcher
from service.fresh import FreshInteractions
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.state import ModelState, ModelWatcher


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    registry: ModelRegistry
    state: ModelState
    watcher: ModelWatcher
    batcher: SearchBatcher
    metrics: ServiceMetrics
    fresh: FreshInteractions | None  # ingested rows newer than the model (None: fold_in off)

    def new_items(self, trained_seq: int) -> Mapping[str, Sequence[str]] | None:
        """Per-user item ids ingested after feedback seq `trained_seq` (service.fresh)."""
        return self.fresh.since(trained_seq) if self.fresh is not None else None
