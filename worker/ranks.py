"""A retrain job's training in N data-parallel ranks: the job process launches torchrun and
waits; rank 0 hands the result back through files in the job's work directory.

Work directory (private to one job):

    dataset.pkl    the job's training set (the dataset plus its ingested rows, merged once by
                   the job process, so every rank trains on the same snapshot)
    config.json    TrainConfig.to_dict()
    spec.json      {"timeout_s": collective timeout, "checkpoint": null or {"dir", "every"}}
    progress.json  rank 0, after every epoch: fit's progress info (written atomically)
    cancel         created by the job process when cancellation is requested; rank 0 polls
                   it before every epoch and every rank stops (trainer.train.fit)
    outcome.json   rank 0, last: {"state": "ok" | "cancelled" | "diverged", "error"?}
    result.pkl     rank 0, before outcome.json: the TrainResult
    ranks.log      torchrun's and the ranks' stdout and stderr (each rank's lines prefixed
                   "[default<rank>]:")
    ranks/         torchrun's log directory: each rank's stdout.log and stderr.log

A rank that dies or hangs makes torchrun exit non-zero; run_ranks raises RanksFailed with the
cause from torchrun's failure summary (which rank, which signal or exception, what a crashed
rank printed) and keeps ranks.log where the caller asked.
"""

from __future__ import annotations

import ctypes
import json
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.artifact import write_file_atomic
from contract.config import TrainConfig
from trainer.checkpoint import CheckpointOptions
from trainer.launch import rank_env, torchrun_command
from worker.exits import describe_exit

_PR_SET_PDEATHSIG = 1
# loaded here, not in the forked child (where only async-signal-safe work belongs)
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class RanksFailed(RuntimeError):
    """A data-parallel run ended without a result; the message names the rank and cause."""


def _write_atomic(path: Path, data: bytes) -> None:
    write_file_atomic(path, lambda f: f.write(data))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this process (torchrun, which then stops its ranks) when the job process
    that started it dies, e.g. os._exit of an orphaned job (worker.heartbeat)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass(frozen=True)
class RankFailure:
    """One failed rank in torchrun's failure summary."""

    rank: int
    pid: int
    exitcode: int  # negative: killed by that signal
    error: str  # the last exception line of its traceback ("" for a signal)


_ENTRY = re.compile(r"^\[\d+\]:\s*$", re.M)


def rank_failures(log: str) -> list[RankFailure]:
    """Every failure in torchrun's summary, the one it calls the root cause first."""
    if "Root Cause" not in log:
        return []
    head, root = log.rsplit("Root Cause", 1)
    others = head.rsplit("Failures:", 1)[1] if "Failures:" in head else ""
    out = []
    for block in [*_ENTRY.split(root)[1:], *_ENTRY.split(others)[1:]]:
        rank = re.search(r"rank\s*:\s*(\d+)", block)
        code = re.search(r"exitcode\s*:\s*(-?\d+)\s*\(pid:\s*(\d+)\)", block)
        if not (rank and code):
            continue
        trace = block.split("traceback", 1)[-1]
        lines = [ln.strip() for ln in trace.splitlines() if ln.strip()]
        lines = [ln for ln in lines if not set(ln) <= set("=-")]
        errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", ln)]
        exitcode = int(code.group(1))
        error = errors[-1] if errors else ("" if exitcode < 0 else (lines[-1] if lines else ""))
        out.append(RankFailure(int(rank.group(1)), int(code.group(2)), exitcode, error))
    return out


def stopped_by_torchrun(log: str) -> set[int]:
    """The pids torchrun itself signalled while stopping the run (consequences, not causes)."""
    return {int(pid) for pid in re.findall(r"Sending process (\d+) closing signal", log)}


def crash_detail(stderr: str) -> str:
    """What a rank killed by a signal printed about it: a C++ exception that ended it
    (``terminate called ... what(): ...``) or the faulthandler's fatal error and the line
    its crashing thread was at ("" when it printed neither)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    whats = [i for i, ln in enumerate(lines) if ln.startswith("what():")]
    if whats:
        i = whats[-1]
        before = lines[i - 1] if i > 0 and lines[i - 1].startswith("terminate called") else ""
        return " ".join(filter(None, [before, lines[i]]))
    fatal = [i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")]
    if not fatal:
        return ""
    i = fatal[-1]
    rest = lines[i + 1 :]
    current = next((j for j, ln in enumerate(rest) if ln.startswith("Current thread")), 0)
    frame = next((ln for ln in rest[current:] if ln.startswith("File ")), "")
    return lines[i] + (f" ({frame})" if frame else "")


def failure_summary(log: str, rank_stderr: Callable[[int], str] | None = None) -> str:
    """The root cause of a failed run from torchrun's log: "rank 1 (pid 123) killed by signal
    9 (SIGKILL)" or "rank 0 (pid 123) exited with status 1: RuntimeError: ..."; the log's last
    line when there is no summary.

    torchrun calls the earliest failure the root cause, with timestamps in whole seconds and
    the ranks it stopped itself among the failures; a rank it did not stop comes first here.
    `rank_stderr(rank)` gives a rank's own stderr, for what a rank killed by a signal said.
    """
    failures = rank_failures(log)
    if not failures:
        lines = [ln for ln in log.splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"
    stopped = stopped_by_torchrun(log)
    root = next((f for f in failures if f.pid not in stopped), failures[0])
    detail = root.error
    if root.exitcode < 0 and rank_stderr is not None:
        detail = crash_detail(rank_stderr(root.rank))
    who = f"rank {root.rank} (pid {root.pid}) {describe_exit(root.exitcode)}"
    return who + (f": {detail.removeprefix(': ')}" if detail else "")


def run_ranks(
    ds: Any,
    cfg: TrainConfig,
    nproc: int,
    workdir: Path,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout_s: float,
    poll_s: float = 0.5,
    keep_log: Path | None = None,
    checkpoint: CheckpointOptions | None = None,
) -> Any:
    """Train `cfg` on `ds` in `nproc` ranks on this machine; the TrainResult of rank 0.

    Raises TrainingCancelled / TrainingDiverged as fit does, RanksFailed when a rank died,
    hung past `timeout_s` or raised (ranks.log then copied to `keep_log`, named in the
    message). The torchrun process group is stopped on any exit. `checkpoint`: the ranks
    checkpoint (rank 0 writes) and resume as fit does (a directory outside `workdir` that
    survives a failed run, or a subdirectory of it that the caller keeps).
    """
    from trainer.train import TrainingCancelled, TrainingDiverged

    workdir.mkdir(parents=True, exist_ok=True)
    _write_atomic(workdir / "dataset.pkl", pickle.dumps(ds, protocol=pickle.HIGHEST_PROTOCOL))
    _write_atomic(workdir / "config.json", json.dumps(cfg.to_dict()).encode())
    ckpt = checkpoint and {"dir": str(checkpoint.directory), "every": checkpoint.every}
    spec = {"timeout_s": timeout_s, "checkpoint": ckpt}
    _write_atomic(workdir / "spec.json", json.dumps(spec).encode())
    for stale in ("progress.json", "outcome.json", "result.pkl", "cancel"):
        (workdir / stale).unlink(missing_ok=True)
    command = torchrun_command(
        nproc,
        ["-m", "worker.ranks", str(workdir)],
        ["--log-dir", str(workdir / "ranks"), "--tee", "3"],
    )
    with open(workdir / "ranks.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=rank_env(),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    try:
        seen = 0.0
        while proc.poll() is None:
            time.sleep(poll_s)
            seen = _report_progress(workdir / "progress.json", seen, progress)
            if should_stop is not None and should_stop():
                (workdir / "cancel").touch()
        _report_progress(workdir / "progress.json", seen, progress)
    finally:
        if proc.poll() is None:
            proc.terminate()  # torchrun stops its ranks
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    outcome_path = workdir / "outcome.json"
    if proc.returncode != 0 or not outcome_path.exists():
        summary = failure_summary(
            (workdir / "ranks.log").read_text(errors="replace"),
            lambda rank: _rank_stderr(workdir / "ranks", rank),
        )
        if "timed out" in summary.lower():
            summary += (
                f" (another rank stopped answering for {timeout_s:g} s: hung, or slower "
                "than the timeout, SPECREC_DIST_TIMEOUT_S)"
            )
        if keep_log is not None:
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workdir / "ranks.log", keep_log)
            summary += f"; the ranks' output is in {keep_log}"
        raise RanksFailed(f"{nproc}-rank training failed: {summary}")
    outcome = json.loads(outcome_path.read_text())
    if outcome["state"] == "cancelled":
        raise TrainingCancelled(outcome.get("error", "cancelled"))
    if outcome["state"] == "diverged":
        raise TrainingDiverged(outcome.get("error", "diverged"))
    with open(workdir / "result.pkl", "rb") as f:
        return pickle.load(f)


def _rank_stderr(log_dir: Path, rank: int) -> str:
    """Rank `rank`'s stderr from torchrun's log directory (one node: local rank = rank)."""
    paths = sorted(log_dir.glob(f"*/attempt_*/{rank}/stderr.log"))
    return paths[-1].read_text(errors="replace") if paths else ""


def _report_progress(
    path: Path, seen: float, progress: Callable[[dict[str, Any]], None] | None
) -> float:
    """Pass a new progress.json to `progress`; returns its mtime (the one seen last)."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return seen
    if mtime != seen and progress is not None:
        try:
            progress(json.loads(path.read_text()))
        except (json.JSONDecodeError, FileNotFoundError):
            return seen
    return mtime


def main(workdir: Path) -> int:
    """One rank (run by torchrun): train, and on rank 0 write the result and the outcome."""
    from trainer.device import pick_device
    from trainer.distributed import close_world, init_world
    from trainer.train import TrainingCancelled, TrainingDiverged, fit

    cfg = TrainConfig.from_dict(json.loads((workdir / "config.json").read_text()))
    spec = json.loads((workdir / "spec.json").read_text())
    world = init_world(pick_device(cfg.device), spec["timeout_s"])
    ckpt = spec.get("checkpoint")
    checkpoint = ckpt and CheckpointOptions(Path(ckpt["dir"]), ckpt["every"], resume=True)
    with open(workdir / "dataset.pkl", "rb") as f:
        ds = pickle.load(f)

    def progress(info: dict[str, Any]) -> None:
        _write_atomic(workdir / "progress.json", json.dumps(info).encode())

    def cancelled() -> bool:
        return (workdir / "cancel").exists()

    outcome: dict[str, Any] = {"state": "ok"}
    try:
        result = fit(
            ds,
            cfg,
            progress=progress if world.is_main else None,
            should_stop=cancelled if world.is_main else None,
            progress_bar=False,
            world=world,
            checkpoint=checkpoint,
        )
    except TrainingCancelled as e:  # every rank stops at the same epoch
        outcome = {"state": "cancelled", "error": str(e)}
    except TrainingDiverged as e:  # every rank sees the same loss
        outcome = {"state": "diverged", "error": str(e)}
    else:
        if world.is_main:
            _write_atomic(workdir / "result.pkl", pickle.dumps(result, pickle.HIGHEST_PROTOCOL))
    if world.is_main:
        _write_atomic(workdir / "outcome.json", json.dumps(outcome).encode())
    close_world(world)
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    from trainer.distributed import exit_rank

    exit_rank(record(main)(Path(sys.argv[1])) or 0)
