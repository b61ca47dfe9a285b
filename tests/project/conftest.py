"""Fixtures for the static checks of the project's packaging, Docker and CI files."""

from __future__ import annotations

import os
import shutil
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def compose_gpu() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Path of the docker-compose binary. In CI (CI=true) its absence is a failure, not a skip:
    `make test` installs Debian's docker-compose, so a missing binary means that step broke."""
    path = shutil.which("docker-compose")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("docker-compose is missing in CI; `make test` should have installed it")
        pytest.skip(
            "docker-compose missing: apt-get install --no-install-recommends docker-compose"
        )
    return path


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
