"""First run: the generated default dataset and, if no model is published, a default model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from contract import layout
from contract.artifact import ModelRegistry
from worker.settings import WorkerSettings

log = logging.getLogger("specrec.worker")


def ensure_default_dataset(settings: WorkerSettings) -> Path:
    """Write the synthetic ``default`` dataset under the home (a no-op when it is there)."""
    from trainer.synthetic import write_dataset

    out = settings.dataset_dir(layout.DEFAULT_DATASET)
    write_dataset(out)
    return out


def bootstrap(settings: WorkerSettings) -> str | None:
    """Generate the default dataset and train+publish a default model if none is published."""
    from contract.config import dataset_config
    from trainer.data import load_dataset
    from trainer.refit import evaluate_then_refit, publish_fitted
    from trainer.train import fit

    data_dir = ensure_default_dataset(settings)
    registry = ModelRegistry(settings.registry_root)
    if registry.current() is not None:
        log.info("model %s is published; nothing to bootstrap", registry.current())
        return None
    device: dict[str, Any] = {"device": settings.device} if settings.device else {}
    log.info("no model published yet: training the default model on %s", data_dir)
    ds = load_dataset(data_dir)
    extra: dict[str, Any] = {}
    if settings.bootstrap_objective == "auto":
        from trainer.select import select_by_validation

        candidates = [
            dataset_config(layout.DEFAULT_DATASET, o, **device) for o in ("directspec+", "spectral")
        ]
        selection = select_by_validation(ds, candidates)
        log.info("bootstrap: %s", selection.reason)
        cfg = selection.winner
        extra["selection"] = selection.to_dict()
    else:
        cfg = dataset_config(layout.DEFAULT_DATASET, settings.bootstrap_objective, **device)
    fitted = evaluate_then_refit(ds, cfg, fit, refit=settings.refit)
    if registry.current() is not None:  # another worker on the shared registry was faster
        log.info("model %s was published meanwhile; not publishing mine", registry.current())
        return None
    version = publish_fitted(fitted, ds, cfg, registry, extra=extra, **settings.publish_options())
    log.info("published default model %s (%s)", version, fitted.evaluation.metrics)
    return version
