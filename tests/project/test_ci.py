""".ci/run is the README's test command and nothing else of substance."""

from __future__ import annotations

import os
import subprocess


def test_ci_run_is_an_executable_bash_script_that_calls_make_test(repo):
    path = repo / ".ci" / "run"
    assert os.access(path, os.X_OK)
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    code = [ln.strip() for ln in lines[1:] if ln.strip() and not ln.strip().startswith("#")]
    assert code == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_scripts_are_executable_and_parse(repo):
    for rel in ("scripts/run.sh", "scripts/healthcheck.py"):
        assert os.access(repo / rel, os.X_OK), rel
    proc = subprocess.run(["bash", "-n", str(repo / "scripts" / "run.sh")], capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_scripts_are_executable_in_git_too(repo):
    """A fresh clone gets the mode git recorded, not the one in this working tree."""
    proc = subprocess.run(
        ["git", "ls-files", "-s", ".ci/run", "scripts/run.sh", "scripts/healthcheck.py"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(f"not tracked by git: {proc.stdout!r} {proc.stderr!r}")
    modes = {line.split()[-1]: line.split()[0] for line in proc.stdout.splitlines()}
    assert modes == {
        ".ci/run": "100755",
        "scripts/healthcheck.py": "100755",
        "scripts/run.sh": "100755",
    }
