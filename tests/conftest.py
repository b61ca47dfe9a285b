"""Fixtures for the whole suite: the stores' database on both backends."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store.db import Target


def pytest_configure(config: pytest.Config) -> None:
    """SIGINT back to Python's default handler: a suite started with it ignored (`make test &`
    from a shell without job control) would pass SIG_IGN to every process it starts (the
    launcher and run.sh tests send them SIGINT); a handled signal is reset to the default by
    exec, so its children start with Ctrl-C working. SIGHUP likewise back to its default: a
    suite started under `nohup` would otherwise start `make run` with hangups ignored, and the
    tests that close its terminal expect it to stop (as it does for a user)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """The session's private PostgreSQL server (tests/postgres.py), started on first use."""
    from tests.postgres import PostgresServer

    try:
        server = PostgresServer()
    except RuntimeError as e:  # no initdb: `make test` installs it; in CI its absence fails
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    server.start()
    try:
        yield server
    finally:
        from store.db import close_pools

        close_pools()
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Target]:
    """Where a test's stores live, on each backend: ``store_target("jobs")`` is a SQLite file
    under tmp_path, or the URL of one fresh PostgreSQL database for the whole test (every
    store shares it, as in a deployment)."""
    if request.param == "sqlite":
        return lambda name: tmp_path / f"{name}.sqlite"
    url = request.getfixturevalue("postgres").new_database()
    return lambda name: url
