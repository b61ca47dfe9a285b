"""pyproject.toml: installable ranges, the extras the README and Dockerfile rely on, console
scripts that resolve to callables, documented in the README."""

from __future__ import annotations

import importlib
import re


def _names(requirements: list[str]) -> dict[str, str]:
    """{normalised distribution name: full requirement string}."""
    out = {}
    for req in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")
        out[name] = req
    return out


def test_every_console_script_is_documented(pyproject, repo):
    readme = (repo / "README.md").read_text()
    for script in pyproject["project"]["scripts"]:
        assert f"`{script}" in readme, f"{script} is installed but the README never names it"


def test_every_console_script_resolves_to_a_callable(pyproject):
    """Strict: a declared script whose module does not import is a broken install for users."""
    for script, target in pyproject["project"]["scripts"].items():
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attr)), f"{script}: {module_name}.{attr} is not callable"


def test_torch_range_is_wide_and_no_faiss_is_a_base_dependency(pyproject):
    deps = _names(pyproject["project"]["dependencies"])
    torch = deps["torch"].replace(" ", "")
    assert torch.startswith("torch>=2.")
    assert "==" not in torch and "<" not in torch  # CUDA builds of any later release install
    # faiss-cpu and faiss-gpu break each other's `faiss`: each comes with its own extra only
    assert not any(name.startswith("faiss") for name in deps)


def test_extras_cpu_gpu_and_dev(pyproject, repo):
    extras = pyproject["project"]["optional-dependencies"]
    assert list(_names(extras["cpu"])) == ["faiss-cpu"]
    assert list(_names(extras["gpu"])) == ["faiss-gpu-cu12"]
    assert not any(name.startswith("faiss") for name in _names(extras["dev"]))
    assert {"pytest", "httpx", "ruff", "pyyaml", "hypothesis"} <= set(_names(extras["dev"]))
    # `make` installs the cpu extra with dev (the tests need faiss)
    makefile = (repo / "Makefile").read_text()
    assert "\nEXTRAS ?= cpu,dev\n" in makefile


def test_every_top_level_package_is_packaged(pyproject, repo):
    """Each folder with an __init__.py is one of the packages setuptools finds, and no pattern
    names a folder that does not exist (the wheel test checks the modules themselves)."""
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.parent.name for p in repo.glob("*/__init__.py")}
    assert packages == {pattern.removesuffix("*") for pattern in include}
    assert (repo / pyproject["project"]["readme"]).is_file()
