"""The per-app objects every route needs, built by create_app and reached via request.app."""

from __future__ import annotations

from dataclasses import dataclass

from contract.artifact import ModelRegistry
from service.batcher import SearchBatcher
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
