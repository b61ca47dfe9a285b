"""pyproject.toml: installable ranges, the extras the README and Dockerfile rely on, console
scripts that resolve to callables, and the ruff configuration the style guide names."""

from __future__ import annotations

import importlib
import re

import pytest

EXPECTED_SCRIPTS = {
    "specrec-train": "trainer.cli:main",
    "specrec-worker": "trainer.worker:main",
    "specrec-serve": "service.main:main",
    "specrec-make-data": "trainer.synthetic:main",
}


def _names(requirements: list[str]) -> dict[str, str]:
    """{normalised distribution name: full requirement string}."""
    out = {}
    for req in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")
        out[name] = req
    return out


def test_console_scripts_are_the_four_documented_processes(pyproject):
    assert pyproject["project"]["scripts"] == EXPECTED_SCRIPTS


@pytest.mark.parametrize("script", sorted(EXPECTED_SCRIPTS))
def test_console_script_resolves_to_a_callable(pyproject, script):
    """Strict: a declared script whose module does not import is a broken install for users."""
    module_name, _, attr = pyproject["project"]["scripts"][script].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), f"{script}: {module_name}.{attr} is not callable"


def test_torch_range_is_wide_and_faiss_cpu_is_the_base_dependency(pyproject):
    deps = _names(pyproject["project"]["dependencies"])
    torch = deps["torch"].replace(" ", "")
    assert torch.startswith("torch>=2.")
    assert "==" not in torch and "<" not in torch  # CUDA builds of any later release install
    assert "faiss-cpu" in deps
    assert not any(name.startswith("faiss-gpu") for name in deps)


def test_extras_gpu_and_dev(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    assert any(name.startswith("faiss-gpu") for name in _names(extras["gpu"]))
    assert {"pytest", "httpx", "ruff", "pyyaml", "hypothesis"} <= set(_names(extras["dev"]))


def test_every_top_level_package_is_packaged(pyproject, repo):
    """Each folder with an __init__.py is one of the packages setuptools finds, and no pattern
    names a folder that does not exist (the wheel test checks the modules themselves)."""
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.parent.name for p in repo.glob("*/__init__.py")}
    assert packages == {pattern.removesuffix("*") for pattern in include}
    assert (repo / pyproject["project"]["readme"]).is_file()


def test_ruff_is_configured_as_the_style_guide_says(pyproject):
    ruff = pyproject["tool"]["ruff"]
    assert ruff["line-length"] == 100
    assert set(ruff["lint"]["select"]) == {"E", "F", "W", "I", "B", "UP"}
