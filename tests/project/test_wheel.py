"""The wheel the Dockerfile builds (`pip wheel --no-deps .` on the COPYed files) holds every
module of contract/, store/, trainer/, worker/ and service/ and the four console scripts: a
module outside the package globs in pyproject.toml would be missing from the image."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def wheel(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # the Docker builder's context: only what the Dockerfile COPYs, so nothing is built in-tree
    src = tmp_path_factory.mktemp("context")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, src / name)
    for pkg in ("contract", "store", "trainer", "worker", "service"):
        shutil.copytree(repo / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out)]
    try:
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 68:  # the build-system requirement
            cmd.append("--no-build-isolation")
    except ImportError:
        pass
    proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("specrec-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_contains_exactly_the_package_modules(repo, wheel):
    in_wheel = {n for n in wheel.namelist() if n.endswith(".py")}
    on_disk = {
        p.relative_to(repo).as_posix()
        for pkg in ("contract", "store", "trainer", "worker", "service")
        for p in (repo / pkg).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert in_wheel == on_disk


def test_wheel_declares_the_console_scripts(pyproject, wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    assert dict(parser["console_scripts"]) == pyproject["project"]["scripts"]
