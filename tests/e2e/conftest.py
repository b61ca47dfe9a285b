"""End-to-end tests build their own settings: nothing from the developer's shell leaks in."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPECREC_") or name in ("ADMIN_TOKEN", "PORT", "HOST"):
            monkeypatch.delenv(name)
