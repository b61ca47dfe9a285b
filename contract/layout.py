"""Where things live under SPECREC_HOME: one definition for the API and the worker.

<home>/data/<name>/          datasets (``default`` is the generated synthetic one)
<home>/models/               ModelRegistry root (unless SPECREC_MODELS_DIR says otherwise)
<home>/jobs.sqlite           retrain job queue
<home>/interactions.sqlite   ingested interactions
<home>/logs/                 what the worker keeps of failed jobs (the ranks' output)
"""

from __future__ import annotations

from pathlib import Path

#: The dataset under ``<home>/data`` that the worker generates (the synthetic one) and that
#: retrain jobs train on unless a job or SPECREC_DATASET names another.
DEFAULT_DATASET = "default"


def registry_dir(home: Path, models_dir: Path | None = None) -> Path:
    return models_dir if models_dir is not None else home / "models"


def data_root(home: Path) -> Path:
    return home / "data"


def jobs_db(home: Path) -> Path:
    return home / "jobs.sqlite"


def feedback_db(home: Path) -> Path:
    return home / "interactions.sqlite"


def logs_dir(home: Path) -> Path:
    return home / "logs"
