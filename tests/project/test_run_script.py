"""scripts/run.sh's orchestration, with stand-in specrec-worker / specrec-serve executables on PATH
that record how they were called (the real processes under the real launcher, at a terminal, are
tests/e2e/test_launcher.py). What is under test is run.sh and scripts/supervisord.conf: bootstrap
only when needed, the token handed to the API, the URLs printed, a signal stops both processes,
and a dying worker is started again while the API keeps running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

FAKE_WORKER = """\
import json, os, signal, sys, time
from pathlib import Path
home = Path(os.environ["SPECREC_HOME"])
log = Path(os.environ["FAKE_LOG"])
def record(event):
    with log.open("a") as f:
        f.write(json.dumps({"who": "worker", "event": event, "pid": os.getpid(),
                            "argv": sys.argv[1:], "t": time.time()}) + "\\n")
if sys.argv[1:] == ["--bootstrap-only"]:
    (home / "data" / "default").mkdir(parents=True, exist_ok=True)
    (home / "data" / "default" / "interactions.csv").write_text("user_id,item_id\\n")
    (home / "models" / "versions" / "v1").mkdir(parents=True, exist_ok=True)
    (home / "models" / "CURRENT").write_text('{"version": "v1", "previous": null}')
    record("bootstrap")
    sys.exit(0)
record("start")
once = home / "exited-once"
if os.environ.get("FAKE_WORKER_EXIT") and not once.exists():
    time.sleep(float(os.environ["FAKE_WORKER_EXIT"]))
    if os.environ.get("FAKE_WORKER_EXIT_ONCE"):
        once.write_text("")
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *_: (record("sigterm"), sys.exit(0)))
while True:
    time.sleep(0.1)
"""

FAKE_SERVE = """\
import http.server, json, os, signal, sys
from pathlib import Path
log = Path(os.environ["FAKE_LOG"])
def record(event, **kw):
    with log.open("a") as f:
        f.write(json.dumps({"who": "serve", "event": event, "pid": os.getpid(), **kw}) + "\\n")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H)
record("start", token=os.environ.get("ADMIN_TOKEN"), home=os.environ["SPECREC_HOME"],
       host=os.environ["HOST"], port=os.environ["PORT"])
signal.signal(signal.SIGTERM, lambda *_: (record("sigterm"), sys.exit(0)))
server.serve_forever()
"""


def _write_exe(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(bin_dir / "specrec-worker", FAKE_WORKER)
    _write_exe(bin_dir / "specrec-serve", FAKE_SERVE)
    # run.sh calls `python` for the token and the readiness probe
    (bin_dir / "python").symlink_to(sys.executable)
    # the real supervisor (a declared dependency), installed beside this interpreter
    (bin_dir / "supervisord").symlink_to(Path(sys.executable).parent / "supervisord")
    return bin_dir


class RunSh:
    """scripts/run.sh as a child process in its own process group, its output collected by a
    reader thread (so a silent or hung script cannot block the test)."""

    def __init__(
        self,
        repo: Path,
        fake_bin: Path,
        home: Path,
        port: int,
        preexec_fn: Callable[[], object] | None = None,
        **env: str,
    ) -> None:
        self.log = home.parent / "events.jsonl"
        base = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "SPECREC_HOME")}
        self.proc = subprocess.Popen(
            ["bash", str(repo / "scripts" / "run.sh")],
            env={
                **base,
                "PATH": f"{fake_bin}:{os.environ['PATH']}",
                "SPECREC_HOME": str(home),
                "PORT": str(port),
                "FAKE_LOG": str(self.log),
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def out(self) -> str:
        return "".join(self._lines)

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.out:
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"run.sh exited {self.proc.returncode}:\n{self.out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.out}")
            time.sleep(0.05)

    def finish(self, timeout_s: float = 30.0) -> int:
        """Wait for run.sh to exit and for its output to end (children gone or detached)."""
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=timeout_s)
        return rc

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def kill(self) -> None:
        """Clean-up after a failed assertion: run.sh's process group and every descendant
        (supervisord puts each program in a process group of its own)."""
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [d for c in map(int, children) for d in (c, *_descendants(c))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_first_run_bootstraps_serves_and_a_signal_stops_both(
    repo, fake_bin, tmp_path, free_port, sig
):
    home = tmp_path / "home"
    run = RunSh(repo, fake_bin, home, free_port)
    try:
        run.wait_for("Ctrl-C (or closing this terminal) stops both processes.")
        events = run.events()
        assert [(e["who"], e["event"]) for e in events][0] == ("worker", "bootstrap")
        assert {(e["who"], e["event"]) for e in events[1:]} == {
            ("worker", "start"),
            ("serve", "start"),
        }
        (serve,) = [e for e in events if e["who"] == "serve"]
        (worker,) = [e for e in events if e["event"] == "start" and e["who"] == "worker"]
        assert worker["argv"] == ["--no-bootstrap"]  # bootstrapped in the foreground
        # a generated token, printed once, is the one the API got
        token = serve["token"]
        assert token and len(token) >= 32
        assert run.out.count(f"export ADMIN_TOKEN={token}") == 1
        assert serve["home"] == str(home) and serve["host"] == "127.0.0.1"
        base = f"http://127.0.0.1:{free_port}"
        for url in ("/ ", "/recommend/user_0?k=20", "/health/spectrum", "/docs"):
            assert f"{base}{url}" in run.out
        run.proc.send_signal(sig)
        rc = run.finish()
        assert rc == 128 + sig
        assert _wait_gone([serve["pid"], worker["pid"]]) == []
        assert ("serve", "sigterm") in {(e["who"], e["event"]) for e in run.events()}
    finally:
        run.kill()


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` has SIGINT ignored (bit 2 - 1 of /proc's SigIgn mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError(f"no SigIgn in /proc/{pid}/status")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_both_when_run_sh_was_started_with_sigint_ignored(
    repo, fake_bin, tmp_path, free_port
):
    """`make run &` from a shell without job control starts run.sh with SIGINT ignored, which
    a shell can neither trap nor reset: run.sh starts over with the default, so SIGINT still
    stops it, and the processes it starts get the default too."""
    run = RunSh(repo, fake_bin, tmp_path / "home", free_port, preexec_fn=_ignore_sigint)
    try:
        run.wait_for("Ctrl-C (or closing this terminal) stops both processes.")
        events = run.events()
        (serve,) = [e for e in events if e["who"] == "serve"]
        (worker,) = [e for e in events if e["event"] == "start" and e["who"] == "worker"]
        assert not _ignores_sigint(run.proc.pid)  # the same process, exec'd once more
        assert not _ignores_sigint(serve["pid"]) and not _ignores_sigint(worker["pid"])
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 130, run.out
        assert _wait_gone([serve["pid"], worker["pid"]]) == []
        assert ("serve", "sigterm") in {(e["who"], e["event"]) for e in run.events()}
        assert "SPECREC_RUN_SIGINT_RESET" not in run.out
    finally:
        run.kill()


def test_second_run_reuses_the_model_and_a_given_token_is_not_printed(
    repo, fake_bin, tmp_path, free_port
):
    home = tmp_path / "home"
    (home / "data" / "default").mkdir(parents=True)
    (home / "data" / "default" / "interactions.csv").write_text("user_id,item_id\n")
    (home / "models").mkdir()
    (home / "models" / "CURRENT").write_text('{"version": "v0", "previous": null}')
    run = RunSh(repo, fake_bin, home, free_port, ADMIN_TOKEN="my-own-token-0123456789")
    try:
        run.wait_for("Ctrl-C (or closing this terminal) stops both processes.")
        assert "reusing the published model" in run.out
        assert "my-own-token-0123456789" not in run.out
        events = run.events()
        assert "bootstrap" not in [e["event"] for e in events]
        (serve,) = [e for e in events if e["who"] == "serve"]
        assert serve["token"] == "my-own-token-0123456789"
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 143
    finally:
        run.kill()


def _starts(run: RunSh, who: str) -> list[dict]:
    return [e for e in run.events() if e["who"] == who and e["event"] == "start"]


def test_a_dying_worker_is_started_again_while_the_api_keeps_running(
    repo, fake_bin, tmp_path, free_port
):
    # exits once, 4 s after its start (past startsecs): a crash of a running worker
    run = RunSh(
        repo,
        fake_bin,
        tmp_path / "home",
        free_port,
        FAKE_WORKER_EXIT="4",
        FAKE_WORKER_EXIT_ONCE="1",
    )
    try:
        run.wait_for("Ctrl-C (or closing this terminal) stops both processes.")
        run.wait_for("exited: worker (exit status 3; not expected)", timeout_s=30)
        deadline = time.monotonic() + 30
        while len(_starts(run, "worker")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first, second = _starts(run, "worker")
        assert first["pid"] != second["pid"] and _alive(second["pid"])
        (serve,) = _starts(run, "serve")  # started once, never stopped
        assert _alive(serve["pid"])
        assert ("serve", "sigterm") not in {(e["who"], e["event"]) for e in run.events()}
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 143
        assert _wait_gone([serve["pid"], second["pid"]]) == []
    finally:
        run.kill()


def test_a_worker_that_keeps_failing_at_start_is_retried_with_growing_delays(
    repo, fake_bin, tmp_path, free_port
):
    # exits 0.5 s after every start (within startsecs): supervisord's backoff, 1 s more each try
    run = RunSh(repo, fake_bin, tmp_path / "home", free_port, FAKE_WORKER_EXIT="0.5")
    try:
        run.wait_for("Ctrl-C (or closing this terminal) stops both processes.")
        deadline = time.monotonic() + 40
        while len(_starts(run, "worker")) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        times = [e["t"] for e in _starts(run, "worker")][:5]
        assert len(times) == 5, run.out
        # waits of 1, 2, 3, 4 s on supervisord's 1 s tick (seen: gaps of 2.6, 2.6, 3.6, 4.6 s):
        # never shorter than the one before, and clearly longer by the end
        gaps = np.diff(times)
        assert np.all(np.diff(gaps) > -0.5) and gaps[-1] - gaps[0] > 1.5, gaps
        assert _alive(_starts(run, "serve")[0]["pid"])
        assert "exited: worker (exit status 3; not expected)" in run.out
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 143
    finally:
        run.kill()
