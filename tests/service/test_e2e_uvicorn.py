"""End to end: the trainer CLI trains and publishes a tiny model, then `python -m service.main`
(real uvicorn, one worker) serves it on a free port; answers are checked against numpy."""

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
import pytest

from contract.artifact import ModelRegistry
from tests.service.modelkit import ADMIN_TOKEN

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SPECREC_") and k not in ("PORT", "HOST", "ADMIN_TOKEN")
    }
    env.update(extra)
    return env


def train_tiny_model(home: Path) -> str:
    """specrec-make-data + specrec-train (2 epochs, d = 16) into home/models."""
    env = clean_env(SPECREC_HOME=str(home))
    data = home / "data" / "tiny"
    for cmd in (
        ["trainer.synthetic", "--out", str(data), "--users", "60", "--items", "80", "--seed", "1"],
        [
            "trainer.cli",
            "--data",
            str(data),
            "--epochs",
            "2",
            "--dim",
            "16",
            "--no-progress",
            "--num-threads",
            "1",
        ],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", *cmd],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    version = ModelRegistry(home / "models").current()
    assert version is not None
    return version


@pytest.mark.slow
def test_uvicorn_serves_a_trainer_cli_model_and_shuts_down_cleanly(tmp_path):
    version = train_tiny_model(tmp_path)
    model = ModelRegistry(tmp_path / "models").load(version).arrays
    port = free_port()
    env = clean_env(
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

        for row in (0, 7, 42):
            user = str(model.user_ids[row])
            for k, exclude_seen in ((15, "true"), (90, "false")):
                r = httpx.get(f"{base}/recommend/{user}?k={k}&exclude_seen={exclude_seen}")
                assert r.status_code == 200
                body = r.json()
                scores = model.item_emb.astype(np.float64) @ model.user_emb[row].astype(np.float64)
                seen = set(model.seen(row).tolist()) if exclude_seen == "true" else set()
                order = [i for i in np.argsort(-scores, kind="stable").tolist() if i not in seen]
                want = [str(model.item_ids[i]) for i in order[:k]]
                assert [i["item_id"] for i in body["items"]] == want
                assert body["model_version"] == version
        r = httpx.post(f"{base}/recommend", json={"user_ids": [str(model.user_ids[3]), "nope"]})
        assert [x["error"] for x in r.json()["results"]][1]["code"] == "unknown_user"
        r = httpx.get(f"{base}/recommend/nobody")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_user"
        spectrum = httpx.get(f"{base}/health/spectrum").json()
        assert spectrum["model_version"] == version and spectrum["users"]["dim"] == 16
        assert httpx.post(f"{base}/models/{version}/activate").status_code == 401
        r = httpx.post(
            f"{base}/models/{version}/activate",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 200  # ADMIN_TOKEN came from the environment
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
