"""The OpenAPI document is the truth: schemathesis finds no difference between it and the service.

``st run`` (the CLI, as a user runs it) against a real uvicorn serving a small model: all checks,
all phases (examples, coverage, fuzzing, stateful), the admin token, a fixed seed and Hypothesis'
derandomized mode with no example database, so the same cases run every time. Its JSON report
gives the numbers asserted here: at least MIN_CASES cases, no failure, no error, every phase run.
No worker runs, so POST /retrain only queues (the stateful phase then meets the documented 409).

Reproduce by hand: serve a model with ADMIN_TOKEN set, then run the command this test prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.modelkit import ADMIN_TOKEN, make_model, publish
from tests.service.test_e2e_uvicorn import REPO, clean_env, free_port

MIN_CASES = 1000
MAX_EXAMPLES = 100  # per operation and phase: ~2,300 cases, 25-90 s on a shared 2-core CPU
SEED = 20260101
DATASET = "tiny"  # the one dataset under $SPECREC_HOME/data, so POST /retrain can name one
ST = Path(sys.executable).with_name("st")

# Schemathesis' defaults otherwise: no check, status or operation is excluded or widened (a batch
# over maxItems is a 422 like any schema violation, not a 413 schemathesis would flag).
CONFIG = """\
[cache]
enabled = false  # no crash cache carried from one run to the next
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``python -m service.main`` on a free port, serving a tiny published model."""
    home = tmp_path_factory.mktemp("home")
    publish(home / "models", make_model(), metrics={"recall@20": 0.25})
    (home / "data" / DATASET).mkdir(parents=True)
    port = free_port()
    env = clean_env(
        SPECREC_HOME=str(home),
        PORT=str(port),
        HOST="127.0.0.1",
        ADMIN_TOKEN=ADMIN_TOKEN,
        SPECREC_LOG_LEVEL="warning",
    )
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.main"], cwd=REPO, env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready in 60 s\n" + log.read_text()
            time.sleep(0.2)
        yield base, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_schemathesis_finds_no_failure(server: tuple[str, Path], tmp_path: Path) -> None:
    base, log = server
    config, report = tmp_path / "schemathesis.toml", tmp_path / "report.json"
    config.write_text(CONFIG)
    cmd = [
        str(ST),
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--checks=all",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--generation-deterministic",
        "--workers=1",
        f"--header=Authorization: Bearer {ADMIN_TOKEN}",
        "--report=json",
        f"--report-json-path={report}",
        "--no-color",
    ]
    print("$", " ".join(cmd))
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert report.exists(), proc.stdout + proc.stderr
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(
        f"schemathesis: {cases['generated']} cases, {cases['with_failures']} with failures "
        f"({cases['unique_failures']} unique), {cases['errored']} errored, phases "
        f"{ {name: p['status'] for name, p in result['phases'].items()} }, "
        f"{result['running_time']:.1f} s in schemathesis, {elapsed:.1f} s in all"
    )
    assert proc.returncode == 0 and result["exit_code"] == 0, proc.stdout[-20_000:]
    assert result["failures"] == [] and cases["with_failures"] == 0, proc.stdout[-20_000:]
    assert result["errors"] == [] and cases["errored"] == 0, proc.stdout[-20_000:]
    assert result["complete"] and result["stop_reason"] == "completed"
    assert {name: p["status"] for name, p in result["phases"].items()} == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
    assert cases["generated"] >= MIN_CASES
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    n_operations = sum(len(ops) for ops in paths.values())
    assert result["operations"]["tested"] == result["operations"]["total"] == n_operations
    assert "Traceback" not in log.read_text()  # no unhandled error on the server side


def test_large_bodies_get_413_from_the_real_server(server: tuple[str, Path]) -> None:
    """Through uvicorn: Content-Length over 16 MiB and a chunked body over it are both 413."""
    base, _ = server
    big = b" " * (16 * 1024 * 1024 + 1)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    for content in (big, chunked()):
        r = httpx.post(f"{base}/interactions", content=content, headers=headers, timeout=30)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "payload_too_large"
