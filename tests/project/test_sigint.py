"""Ctrl-C works however the suite or the programs were started: with SIGINT ignored (`make test &`
or `make run &` from a shell without job control passes SIG_IGN on), the processes the tests
start and specrec's own programs restore the default.

(run.sh under SIG_IGN: tests/project/test_run_script.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.project.test_run_script import _ignores_sigint

REPO = Path(__file__).resolve().parents[2]
# specrec-worker, wherever its entry point (pyproject's [project.scripts]) puts its main
WORKER = (
    "import sys; from importlib.metadata import entry_points; "
    "sys.exit(entry_points(group='console_scripts')['specrec-worker'].load()())"
)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECREC_")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_processes_the_tests_start_get_the_default_sigint() -> None:
    """Run with or without SIGINT ignored, the suite's children start with the default."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not _ignores_sigint(child.pid)
    finally:
        child.kill()
        child.wait()


def test_the_suite_started_with_sigint_ignored_restores_it() -> None:
    """The test above, in a pytest started with SIGINT ignored (tests/conftest.py restores it)."""
    test = "tests/project/test_sigint.py::test_processes_the_tests_start_get_the_default_sigint"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=REPO,
        env=_env(),
        preexec_fn=_ignore_sigint,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


def test_the_worker_started_with_sigint_ignored_stops_on_sigint_during_bootstrap(
    tmp_path: Path,
) -> None:
    """specrec-worker's first-run bootstrap (dataset, then a model trained on the CPU) ends on
    SIGINT although it was started with SIGINT ignored; nothing is published."""
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, "--bootstrap-only"],
            cwd=REPO,
            env=_env(SPECREC_HOME=str(tmp_path / "home")),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_ignore_sigint,
        )
    try:
        deadline = time.monotonic() + 120
        while "training the default model" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert not _ignores_sigint(proc.pid)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc != 0, log.read_text()
    assert "KeyboardInterrupt" in log.read_text()
    assert not (tmp_path / "home" / "models" / "CURRENT").exists()
