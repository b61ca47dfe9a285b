"""Fixtures shared by the worker tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer.synthetic import write_dataset


@pytest.fixture
def worker_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A worker home holding a small default dataset (300 users x 200 items), with no
    SPECREC_* variable of the calling environment leaking into its settings."""
    for name in list(os.environ):
        if name.startswith("SPECREC_"):
            monkeypatch.delenv(name)
    write_dataset(tmp_path / "data" / "default", n_users=300, n_items=200)
    return tmp_path
