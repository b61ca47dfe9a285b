"""`make run` for real, at a terminal: the README's first command under a pseudo-terminal, on a
fresh SPECREC_HOME, with the real bootstrap (progress bar), supervisord, API and worker.

Then the faults a running installation meets, each asserting what survives: the worker killed
mid-training, a job's training process killed (what the OOM killer does), the API killed while a
job is queued or running; and Ctrl-C at the end stops every process, as does closing the
terminal (a second launcher on the same home). The tests share one launcher and run in file
order.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest

from tests.e2e.test_retrain_flow import wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOKEN = "launcher-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HEARTBEAT_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _descendants(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        out += [child, *_descendants(child)]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


class Launcher:
    """`make run` on a pty; a thread drains the terminal so no process blocks on a full pty."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SPECREC_") and k not in ("ADMIN_TOKEN", "HOST", "PORT")
        }
        env.update(
            SPECREC_HOME=str(home),
            PORT=str(self.port),
            ADMIN_TOKEN=TOKEN,
            TERM="xterm",
            SPECREC_HEARTBEAT_INTERVAL_S="0.5",
            SPECREC_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
            SPECREC_POLL_INTERVAL_S="0.2",
            SPECREC_WATCH_INTERVAL_S="0.2",
            # the faults below end their job; retries from checkpoints (the default, one) are
            # tested in tests/worker/test_job_retries.py
            SPECREC_JOB_RETRIES="0",
        )
        self.child = pexpect.spawn(
            "make", ["run"], cwd=str(REPO), env=env, encoding="utf-8", dimensions=(50, 160)
        )
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def _drain(self) -> None:
        while True:
            try:
                self._chunks.append(self.child.read_nonblocking(65536, timeout=0.5))
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError):
                return

    @property
    def out(self) -> str:
        return "".join(self._chunks)

    def wait_output(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            if text in self.out:
                return True
            if not self._reader.is_alive():
                raise AssertionError(f"make run ended before {text!r}:\n{self.out[-5000:]}")
            return False

        wait_for(seen, timeout, f"{text!r} from make run")

    @property
    def supervisord(self) -> int:
        return int(re.search(r"supervisord pid (\d+)", self.out).group(1))

    def program(self, name: str) -> int | None:
        """pid of the supervised `specrec-<name>` process, if one runs."""
        for pid in _children(self.supervisord):
            if f"specrec-{name}" in _cmdline(pid) and _alive(pid):
                return pid
        return None

    def training_process(self, worker: int) -> int | None:
        for pid in _children(worker):
            if "spawn_main" in _cmdline(pid) and _alive(pid):
                return pid
        return None

    def retrain(self, body: dict[str, Any]) -> str:
        r = self.http.post("/retrain", json=body, headers=AUTH)
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.http.get(f"/retrain/{job_id}").json()

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id))["state"] in states and j,
            timeout,
            f"job {job_id} to reach {states}",
        )

    def wait_training(self, job_id: str) -> None:
        wait_for(
            lambda: (self.job(job_id).get("progress") or {}).get("epoch", 0) >= 1,
            120,
            "training to start",
        )

    def serving_version(self) -> str:
        return self.http.get("/readyz").json()["model_version"]

    def kill_all(self) -> None:
        for pid in [self.child.pid, *_descendants(self.child.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.child.close(force=True)
        self.http.close()


class Hammer(threading.Thread):
    """GET /recommend in a loop from its own client: counts answers, keeps every failure."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.ok = 0
        self.versions: set[str] = set()
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as c:
            while not self._stop_event.is_set():
                try:
                    r = c.get("/recommend/user_7?k=20")
                    if r.status_code == 200 and len(r.json()["items"]) == 20:
                        self.ok += 1
                        self.versions.add(r.json()["model_version"])
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                time.sleep(0.005)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    run = Launcher(tmp_path_factory.mktemp("launcher") / "home")
    try:
        run.wait_output("specrec is up", timeout=900)
        yield run
    finally:
        (Path(tmp_path_factory.getbasetemp()) / "launcher.log").write_text(run.out)
        run.kill_all()


def test_first_run_bootstraps_with_a_progress_bar_and_serves(launcher: Launcher) -> None:
    before_up = launcher.out.split("specrec is up")[0]
    assert ">> first run: building the default dataset and model" in before_up
    # tqdm drew its bar on the terminal during the bootstrap: "10/10 [00:09<00:00, ...epoch"
    assert re.search(r"\| *10/10 \[\d\d:\d\d<00:00", before_up), before_up[-3000:]
    r = launcher.http.get("/recommend/user_0?k=20")
    assert r.status_code == 200 and len(r.json()["items"]) == 20
    assert launcher.program("serve") and launcher.program("worker")


def test_worker_killed_mid_training_is_replaced_while_the_api_answers(launcher: Launcher) -> None:
    old_version = launcher.serving_version()
    hammer = Hammer(launcher.base)
    hammer.start()
    try:
        job_id = launcher.retrain({"epochs": 500})
        launcher.wait_training(job_id)
        worker = launcher.program("worker")
        trainer = launcher.training_process(worker)
        assert worker and trainer
        os.kill(worker, signal.SIGKILL)

        job = launcher.wait_state(job_id, ("failed",), timeout=HEARTBEAT_TIMEOUT_S + 10)
        assert "ended while the job ran" in job["error"] and f":{worker}:" in job["error"]
        new_worker = wait_for(
            lambda: (p := launcher.program("worker")) and p != worker and p, 30, "a new worker"
        )
        wait_for(lambda: not _alive(trainer), 10, "the orphaned training process to stop")
        assert "exited: worker (terminated by SIGKILL; not expected)" in launcher.out

        # the new worker runs the next job, which is published and hot-swapped in
        second = launcher.retrain({"epochs": 2, "force": True})
        job = launcher.wait_state(second, ("succeeded", "failed", "rejected"), timeout=240)
        assert job["state"] == "succeeded", job
        assert launcher.program("worker") == new_worker
        wait_for(lambda: job["model_version"] in hammer.versions, 30, "the hot swap")
    finally:
        hammer.stop()
    print(f"\nworker SIGKILL: {hammer.ok} requests answered, {len(hammer.failures)} failed")
    assert hammer.failures == []
    assert hammer.ok > 50 and old_version in hammer.versions


def test_a_killed_training_process_fails_only_its_job(launcher: Launcher) -> None:
    worker = launcher.program("worker")
    job_id = launcher.retrain({"epochs": 500})
    launcher.wait_training(job_id)
    trainer = launcher.training_process(worker)
    assert trainer
    killed_at = time.monotonic()
    os.kill(trainer, signal.SIGKILL)
    job = launcher.wait_state(job_id, ("failed",), timeout=HEARTBEAT_TIMEOUT_S)
    # the worker saw its child die: at once, not after the heartbeat timeout
    assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT_S / 2
    assert f"training process {trainer} killed by signal 9 (SIGKILL)" in job["error"]
    assert launcher.program("worker") == worker  # the worker itself lives on
    second = launcher.retrain({"epochs": 2, "force": True})
    job = launcher.wait_state(second, ("succeeded", "failed", "rejected"), timeout=240)
    assert job["state"] == "succeeded", job
    assert launcher.program("worker") == worker


def test_api_killed_with_a_job_in_flight_loses_it_and_runs_it_once(launcher: Launcher) -> None:
    before = {m["version"] for m in launcher.http.get("/models").json()["versions"]}
    job_id = launcher.retrain({"epochs": 3, "force": True})
    api = launcher.program("serve")
    os.kill(api, signal.SIGKILL)  # the job is queued or just claimed
    new_api = wait_for(
        lambda: (p := launcher.program("serve")) and p != api and p, 30, "a new API process"
    )

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return launcher.http.get("/readyz").status_code == 200
        return False

    wait_for(ready, 60, "the restarted API to be ready")
    job = launcher.wait_state(job_id, ("succeeded", "failed", "rejected"), timeout=240)
    assert job["state"] == "succeeded", job
    after = {m["version"] for m in launcher.http.get("/models").json()["versions"]}
    assert after - before == {job["model_version"]}  # published exactly once
    ids = [j["job_id"] for j in launcher.http.get("/retrain").json()["jobs"]]
    assert ids.count(job_id) == 1
    assert launcher.program("serve") == new_api
    assert "exited: api (terminated by SIGKILL; not expected)" in launcher.out


def test_ctrl_c_stops_every_process(launcher: Launcher) -> None:
    pids = [launcher.supervisord, *_descendants(launcher.supervisord)]
    assert len(pids) >= 3
    launcher.child.sendintr()
    wait_for(lambda: not launcher._reader.is_alive(), 60, "make run to end")
    launcher.child.close()
    # run.sh exits 130; make reports "Error 130" and ends by the same SIGINT, as at a shell
    assert launcher.child.signalstatus == signal.SIGINT, launcher.out[-2000:]
    assert "Error 130" in launcher.out
    assert ">> stopping specrec-serve and specrec-worker" in launcher.out
    wait_for(lambda: not any(_alive(p) for p in pids), 10, "every process to stop")


@pytest.mark.parametrize("how", ["shell-forwards-sighup", "pty-closed", "both"])
def test_closing_the_terminal_stops_every_process(launcher: Launcher, how: str) -> None:
    """A closed terminal window, on a second `make run` over the first one's home. From an
    interactive shell the hangup reaches make's whole process group (the shell forwards SIGHUP
    to its jobs); when make leads the session itself (here: pexpect's pty, like `tmux new
    'make run'`), closing the pty's master only signals make, which then waits for run.sh:
    run.sh notices the terminal is gone; `tmux kill-session` does both."""
    again = Launcher(launcher.home)
    try:
        again.wait_output("specrec is up", timeout=300)
        assert ">> reusing the published model" in again.out
        pids = [again.supervisord, *_descendants(again.supervisord)]
        assert len(pids) >= 3 and again.program("serve") and again.program("worker")
        if how in ("shell-forwards-sighup", "both"):
            os.killpg(os.getpgid(again.child.pid), signal.SIGHUP)
        if how in ("pty-closed", "both"):
            os.close(again.child.child_fd)  # the kernel hangs the terminal up
        wait_for(lambda: not any(_alive(p) for p in pids), 60, "every process to stop")
        wait_for(lambda: not _alive(again.child.pid), 30, "make to end")
    finally:
        with contextlib.suppress(OSError):
            again.kill_all()
