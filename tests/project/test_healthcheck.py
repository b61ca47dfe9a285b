"""scripts/healthcheck.py, run the way Docker runs it (a subprocess; exit status is the verdict)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from contract.artifact import ModelArrays, ModelRegistry


def _run(repo: Path, mode: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPECREC_") and k != "PORT"}
    return subprocess.run(
        [sys.executable, str(repo / "scripts" / "healthcheck.py"), mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 503
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def readyz_server() -> Iterator[tuple[int, type[_Readyz]]]:
    handler = type("Handler", (_Readyz,), {"status": 503, "paths": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_ready_mode_follows_the_readyz_status(repo, readyz_server):
    port, handler = readyz_server
    env = {"PORT": str(port)}
    not_ready = _run(repo, "ready", env)
    assert not_ready.returncode == 1
    assert "answered 503" in not_ready.stderr
    handler.status = 200
    assert _run(repo, "ready", env).returncode == 0
    assert handler.paths == ["/readyz", "/readyz"]


def test_ready_mode_fails_when_nothing_listens(repo, free_port):
    proc = _run(repo, "ready", {"PORT": str(free_port)})
    assert proc.returncode == 1
    assert "unreachable" in proc.stderr


def _tiny_model() -> ModelArrays:
    rng = np.random.default_rng(0)
    return ModelArrays(
        user_emb=rng.standard_normal((3, 4)).astype(np.float32),
        item_emb=rng.standard_normal((5, 4)).astype(np.float32),
        user_ids=np.array(["user_0", "user_1", "user_2"]),
        item_ids=np.array([f"item_{i}" for i in range(5)]),
        seen_indptr=np.array([0, 1, 2, 3], dtype=np.int64),
        seen_indices=np.array([0, 1, 2], dtype=np.int32),
        item_popularity=np.array([1, 1, 1, 0, 0], dtype=np.int64),
    )


def test_model_mode_is_healthy_only_once_a_model_is_published(repo, tmp_path):
    env = {"SPECREC_HOME": str(tmp_path)}
    before = _run(repo, "model", env)
    assert before.returncode == 1
    assert "no model published yet" in before.stderr
    version = ModelRegistry(tmp_path / "models").publish(_tiny_model(), config={"test": True})
    assert (tmp_path / "models" / "versions" / version).is_dir()
    assert _run(repo, "model", env).returncode == 0


def test_model_mode_honours_specrec_models_dir(repo, tmp_path):
    models = tmp_path / "elsewhere"
    ModelRegistry(models).publish(_tiny_model(), config={})
    home = tmp_path / "home"
    assert _run(repo, "model", {"SPECREC_HOME": str(home)}).returncode == 1
    env = {"SPECREC_HOME": str(home), "SPECREC_MODELS_DIR": str(models)}
    assert _run(repo, "model", env).returncode == 0


def test_model_mode_rejects_a_pointer_to_a_missing_version(repo, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "CURRENT").write_text('{"version": "v-gone", "previous": null}')
    proc = _run(repo, "model", {"SPECREC_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert "'v-gone'" in proc.stderr


def test_unknown_mode_is_a_usage_error(repo):
    assert _run(repo, "bogus", {}).returncode == 2
