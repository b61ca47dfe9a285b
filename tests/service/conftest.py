"""Fixtures for service tests: tiny models built with numpy and published to a tmp registry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.modelkit import ADMIN_TOKEN, Model, make_model, publish, with_top_lists

_ENV = ("PORT", "HOST", "ADMIN_TOKEN")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own Settings; nothing from the developer's shell leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("SPECREC_") or name.upper() in _ENV:
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, watch_interval_s=0.05, admin_token=ADMIN_TOKEN)


@pytest.fixture
def model() -> Model:
    return make_model()


@pytest.fixture
def published(settings: Settings, model: Model) -> str:
    # with each user's top list, as the trainer publishes a model
    return publish(settings.registry_root, with_top_lists(model, 100), metrics={"recall@20": 0.25})


@pytest.fixture
def client(settings: Settings, published: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
