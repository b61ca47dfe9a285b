"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a real uvicorn.

One server and one retrain worker for the whole browser session: ``python -m service.main`` on a
free loopback port, serving two tiny published models (so there is a previous one), and
``python -m worker.cli`` on the synthetic default dataset, so retrain jobs really train.

No browser is ever downloaded (``playwright install`` is not used): Playwright launches the
system Chromium through ``executable_path``; ``make test`` installs it (apt-get) when missing.
In CI (CI=true) a missing browser or Playwright is a failure, not a skip.

Every page is opened in a fresh browser context (its own sessionStorage and cookies) whose
requests are routed through a guard: anything not addressed to 127.0.0.1 is aborted and
recorded, and the test fails at teardown if there was any.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from contract.artifact import ModelRegistry
from contract.spectrum import embedding_spectrum
from tests.service.modelkit import ADMIN_TOKEN, make_model, with_top_lists
from tests.service.test_e2e_uvicorn import REPO, clean_env, free_port

CHROMIUM = os.environ.get("SPECREC_CHROMIUM", "/usr/bin/chromium")
#: Launch flags for Chromium as root in a container: no sandbox (root), no GPU, nothing that
#: phones home. Playwright adds --headless and a fresh temporary --user-data-dir per launch.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1360, "height": 900}
DATASET_USERS, DATASET_ITEMS = 3000, 2000  # the synthetic default: a 4-epoch retrain takes ~8 s


def _missing(what: str, how: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing in CI; `make test` should have installed it ({how})")
    pytest.skip(f"{what} missing: {how}")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        _missing("chromium", "apt-get install --no-install-recommends chromium fonts-dejavu-core")
    return str(path)


def _playwright() -> Any:
    try:
        import playwright.sync_api
    except ImportError:
        _missing("the playwright Python package", "pip install -e '.[dev]'")
    return playwright.sync_api


@pytest.fixture(scope="session")
def expect() -> Any:
    """playwright.sync_api.expect (auto-retrying assertions on locators)."""
    return _playwright().expect


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an asyncio loop running on this thread while
    it is started, which would break later tests that call asyncio.run()."""
    with _playwright().sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Server:
    base: str
    home: Path
    log: Path
    versions: list[str]  # published before the tests, oldest first; the newer one serves

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kw)


def _publish(home: Path, seed: int, metrics: dict[str, float], decay: float) -> str:
    """A tiny model (60 users x 120 items x 16) with its spectrum in the manifest; columns
    scaled by decay**j, so a small decay makes a collapsed-looking spectrum."""
    rng = np.random.default_rng(seed)
    scale = decay ** np.arange(16)
    users = rng.standard_normal((60, 16)) * scale
    items = rng.standard_normal((120, 16)) * scale
    model = with_top_lists(make_model(user_emb=users, item_emb=items, seed=seed), 100)
    a = model.arrays  # with its top lists, as the trainer publishes it
    return ModelRegistry(home / "models").publish(
        a,
        config={"objective": "directspec+", "encoder": "mf", "dim": 16},
        metrics=metrics,
        spectrum=embedding_spectrum(np.asarray(a.user_emb), np.asarray(a.item_emb)),
    )


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server not ready in {timeout:g} s\n{log.read_text()}"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API (with ADMIN_TOKEN) and a retrain worker sharing one SPECREC_HOME."""
    from trainer.synthetic import write_dataset

    home = tmp_path_factory.mktemp("home")
    write_dataset(home / "data" / "default", n_users=DATASET_USERS, n_items=DATASET_ITEMS)
    older = _publish(home, seed=1, metrics={"recall@20": 0.081, "ndcg@20": 0.052}, decay=0.6)
    newer = _publish(home, seed=2, metrics={"recall@20": 0.093, "ndcg@20": 0.061}, decay=0.97)
    port = free_port()
    common = {"SPECREC_HOME": str(home), "SPECREC_LOG_LEVEL": "warning"}
    api_env = clean_env(
        **common,
        PORT=str(port),
        HOST="127.0.0.1",
        ADMIN_TOKEN=ADMIN_TOKEN,
        SPECREC_WATCH_INTERVAL_S="0.2",
    )
    worker_env = clean_env(
        **common,
        PYTHONPATH=str(REPO),
        SPECREC_DEVICE="cpu",
        SPECREC_POLL_INTERVAL_S="0.2",
        SPECREC_HEARTBEAT_INTERVAL_S="0.3",
    )
    log, worker_log = home / "server.log", home / "worker.log"
    with log.open("wb") as out, worker_log.open("wb") as wout:
        api = subprocess.Popen(
            [sys.executable, "-m", "service.main"], cwd=REPO, env=api_env, stdout=out, stderr=out
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "--no-bootstrap"],
            cwd=REPO,
            env=worker_env,
            stdout=wout,
            stderr=wout,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, api, log, timeout=60)
        yield Server(base, home, log, [older, newer])
    finally:
        for proc in (worker, api):
            proc.terminate()
        for proc in (worker, api):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]


@dataclass
class Guard:
    """Requests the page made, and those aborted for leaving the loopback interface."""

    allowed_host: str = "127.0.0.1"
    seen: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def route(self, route: Any) -> None:
        url = route.request.url
        self.seen.append(url)
        scheme = urlsplit(url).scheme
        if scheme in ("data", "blob", "about"):
            route.continue_()
        elif urlsplit(url).hostname == self.allowed_host:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")


@pytest.fixture
def guard() -> Guard:
    return Guard()


@pytest.fixture
def page(browser: Any, server: Server, guard: Guard) -> Iterator[Any]:
    """A page in a fresh context; no request may leave 127.0.0.1, no uncaught JS error."""
    context = browser.new_context(viewport=VIEWPORT, base_url=server.base)
    context.set_default_timeout(15_000)
    context.route("**/*", guard.route)
    pg = context.new_page()
    pg.on("pageerror", lambda exc: guard.page_errors.append(str(exc)))
    pg.on("console", guard.console)
    try:
        yield pg
    finally:
        context.close()
    assert guard.blocked == [], f"requests left the loopback interface: {guard.blocked}"
    assert guard.page_errors == [], f"uncaught errors in the page: {guard.page_errors}"
