"""Several uvicorn workers on one port (SPECREC_WORKERS=2, real processes): every worker
answers, interactions ingested through one worker are folded in by all of them, and a worker
that dies is replaced while the other keeps answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.modelkit import ADMIN_TOKEN, auth, make_model, publish
from tests.service.test_e2e_uvicorn import REPO, clean_env, free_port


def children(pid: int) -> set[int]:
    """Live worker processes of uvicorn's supervisor `pid` (Linux /proc): its children that
    multiprocessing spawned, not its resource tracker."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = set()
    for child in path.read_text().split() if path.exists() else ():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.add(int(child))
    return found


@pytest.mark.slow
def test_two_workers_share_the_port_and_the_fresh_interactions(tmp_path: Path) -> None:
    publish(tmp_path / "models", make_model(n_users=30, n_items=50, seed=4))
    port = free_port()
    env = clean_env(
        SPECREC_HOME=str(tmp_path),
        SPECREC_WORKERS="2",
        PORT=str(port),
        HOST="127.0.0.1",
        ADMIN_TOKEN=ADMIN_TOKEN,
    )
    proc = subprocess.Popen([sys.executable, "-m", "service.main"], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            deadline = time.monotonic() + 90
            while len(children(proc.pid)) < 2 or not _ready(c):
                assert proc.poll() is None and time.monotonic() < deadline, "not up in 90 s"
                time.sleep(0.2)
            workers = children(proc.pid)
            assert len(workers) == 2
            # ingested through whichever worker takes it, folded in by every worker: the
            # connections below are fresh, so the kernel spreads them over both
            r = c.post(
                "/interactions",
                json={"interactions": [{"user_id": "newbie", "item_id": "i3"}]},
                headers=auth(),
            )
            assert r.status_code == 200, r.text
            time.sleep(0.05)
            sources = set()
            for _ in range(40):
                with httpx.Client(base_url=base, timeout=10) as fresh_client:
                    body = fresh_client.get("/recommend/newbie?k=3").json()
                sources.add(body["source"])
            assert sources == {"fold-in"}
            # a worker killed: the other answers new connections meanwhile (the killed one's
            # open connections are lost with it), uvicorn starts a replacement
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            ok = 0
            for _ in range(20):
                with httpx.Client(base_url=base, timeout=10) as fresh_client:
                    ok += fresh_client.get("/recommend/u1?k=3").status_code == 200
            assert ok == 20
            deadline = time.monotonic() + 60
            while len(children(proc.pid) - {victim}) < 2:
                assert time.monotonic() < deadline, "no replacement worker in 60 s"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0


def _ready(c: httpx.Client) -> bool:
    try:
        return c.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False
