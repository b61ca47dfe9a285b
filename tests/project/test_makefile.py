"""The Makefile, exercised through make itself: dry runs (`make -n`) show what a target would run,
and the `test` recipe runs for real against a fake venv whose pytest exits with a chosen code."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TARGETS = ["run", "test", "lint", "format", "clean", "install"]


def _make(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make is not None, "make is required (apt-get install make)"
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _stamp_name(repo: Path, extras: str = "cpu,dev", torch: str = "2.13.0") -> str:
    digest = hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return f".specrec-installed-{digest}-{extras}-torch{torch}"


def _fake_venv(root: Path, pytest_rc: int) -> Path:
    """A directory shaped like a venv: bin/python runs `-m pytest` as `exit pytest_rc`."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        f'echo "fake python $*" >> "{root}/calls.log"\n'
        f'[ "$1 $2" = "-m pytest" ] && exit {pytest_rc}\n'
        "exit 0\n"
    )
    (bin_dir / "python").chmod(0o755)
    return root


@pytest.mark.parametrize("target", TARGETS)
def test_target_exists(repo, target, tmp_path):
    proc = _make(repo, "-n", "-B", target, f"VENV={tmp_path / 'venv'}")
    assert proc.returncode == 0, proc.stderr


def test_run_installs_pinned_torch_before_the_project_then_starts_run_sh(repo, tmp_path):
    proc = _make(repo, "-n", "-B", "run", f"VENV={tmp_path / 'venv'}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    venv = next(i for i, ln in enumerate(lines) if "-m venv" in ln)
    torch = next(i for i, ln in enumerate(lines) if "pip install" in ln and "torch==" in ln)
    project = next(i for i, ln in enumerate(lines) if "pip install" in ln and "-e" in ln)
    start = next(i for i, ln in enumerate(lines) if "scripts/run.sh" in ln)
    # the other faiss goes before the project's (both in one venv break `faiss`)
    other = next(i for i, ln in enumerate(lines) if "pip uninstall" in ln)
    assert venv < torch < other < project < start
    assert '"torch==2.13.0"' in lines[torch]
    assert '".[cpu,dev]"' in lines[project]
    assert "-y faiss-gpu-cu12" in lines[other]
    # no other line installs torch unpinned
    assert not any("pip install" in ln and " torch " in f"{ln} " for ln in lines)


def test_the_gpu_extra_removes_faiss_cpu_first(repo, tmp_path):
    proc = _make(repo, "-n", "-B", "install", f"VENV={tmp_path / 'venv'}", "EXTRAS=gpu,dev")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("pip uninstall --quiet -y faiss-cpu") < out.index('-e ".[gpu,dev]"')


def test_test_target_runs_ruff_check_format_check_and_pytest(repo, tmp_path):
    proc = _make(repo, "-n", "-B", "test", f"VENV={tmp_path / 'venv'}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("pip install") < out.index('ruff" check .')
    assert out.index('ruff" check .') < out.index('ruff" format --check .')
    assert out.index("format --check") < out.index("-m pytest")
    assert "apt-get install" in out and "docker-compose" in out


def test_install_is_skipped_when_the_stamp_for_this_pyproject_exists(repo, tmp_path):
    venv = _fake_venv(tmp_path / "venv", pytest_rc=0)
    before = _make(repo, "-n", "install", f"VENV={venv}")
    assert "pip install" in before.stdout
    (venv / _stamp_name(repo)).touch()
    after = _make(repo, "-n", "install", f"VENV={venv}")
    assert after.returncode == 0, after.stderr
    assert "pip install" not in after.stdout
    # a stamp for another pyproject.toml (or another torch) does not count
    other = _make(repo, "-n", "install", f"VENV={venv}", "TORCH_VERSION=2.12.0")
    assert "pip install" in other.stdout


@pytest.mark.parametrize(
    ("pytest_rc", "make_ok", "message"),
    [(0, True, None), (1, False, None), (5, False, "pytest collected no tests")],
)
def test_test_recipe_passes_on_pytest_success_only(repo, tmp_path, pytest_rc, make_ok, message):
    """The real recipe with a fake venv; `-o` keeps install/compose-tool/lint from running."""
    venv = _fake_venv(tmp_path / "venv", pytest_rc)
    proc = _make(repo, "test", f"VENV={venv}", "-o", "install", "-o", "compose-tool", "-o", "lint")
    assert (proc.returncode == 0) is make_ok, (proc.stdout, proc.stderr)
    assert "-m pytest" in (venv / "calls.log").read_text()
    if message:
        assert message in proc.stderr


def test_venv_creation_failure_explains_python3_venv(repo, tmp_path):
    """A python without a working venv module (Debian without python3.11-venv) gets told how."""
    fake = tmp_path / "python3.11"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"-m venv"*) echo "ensurepip is not available" >&2; exit 1;; esac\n'
        'case "$*" in "-V") echo "Python 3.11.2";; esac\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    proc = _make(repo, "venv", f"VENV={venv}", f"PYTHON={fake}")
    assert proc.returncode != 0
    assert "apt-get install python3.11-venv" in proc.stderr
    assert not venv.exists()


def test_old_python_is_refused_with_advice(repo, tmp_path):
    old = tmp_path / "python3"
    old.write_text(
        "#!/bin/sh\n"
        'case "$*" in "-V") echo "Python 3.9.2"; exit 0;; esac\n'
        "exit 1\n"  # the version check `python -c ...` fails like 3.9 would
    )
    old.chmod(0o755)
    proc = _make(repo, "venv", f"VENV={tmp_path / 'venv'}", f"PYTHON={old}")
    assert proc.returncode != 0
    assert "needs Python >= 3.11" in proc.stderr
