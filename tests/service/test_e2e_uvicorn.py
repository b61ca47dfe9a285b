"""End to end: `python -m service.main` (real uvicorn) on a free port against a published model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from tests.service.modelkit import ADMIN_TOKEN, make_model, publish

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_serves_recommendations_and_shuts_down_cleanly(tmp_path):
    model = make_model(n_users=40, n_items=300, dim=16, seed=5)
    version = publish(tmp_path / "models", model)
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SPECREC_") and k not in ("PORT", "HOST", "ADMIN_TOKEN")
    }
    env.update(
        SPECREC_HOME=str(tmp_path), PORT=str(port), HOST="127.0.0.1", ADMIN_TOKEN=ADMIN_TOKEN
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.main"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not become ready in 60 s"
            time.sleep(0.1)

        r = httpx.get(f"{base}/recommend/u7?k=15", timeout=5)
        assert r.status_code == 200
        body = r.json()
        a = model.arrays
        scores = a.item_emb.astype(np.float64) @ a.user_emb[7].astype(np.float64)
        want = [r for r in np.argsort(-scores, kind="stable").tolist() if r not in model.seen[7]]
        assert [i["item_id"] for i in body["items"]] == [f"i{r}" for r in want[:15]]
        assert body["model_version"] == version
        r = httpx.get(f"{base}/recommend/nobody", timeout=5)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_user"
        r = httpx.post(f"{base}/models/{version}/activate", timeout=5)
        assert r.status_code == 401  # ADMIN_TOKEN came from the environment
        r = httpx.post(
            f"{base}/models/{version}/activate",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=5,
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit status -15) by design
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert f"serving model {version}" in out
    assert "Application shutdown complete" in out
