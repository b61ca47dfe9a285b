"""The service never imports torch, directly or through trainer.* (checked in a fresh process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, pkgutil, sys
import service
from service.app import create_app
from service.settings import Settings
for mod in pkgutil.walk_packages(service.__path__, "service."):
    importlib.import_module(mod.name)
create_app(Settings(home="/nonexistent-specrec-home", watch=False))
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("loaded:", len(sys.modules), "service modules:",
      sum(m.startswith("service.") for m in sys.modules))
assert not heavy, f"service imported {heavy[:5]}"
"""


def test_importing_the_whole_service_does_not_import_torch():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "service modules:" in proc.stdout
    n_service = int(proc.stdout.split("service modules:")[1])
    assert n_service >= 15  # the probe really imported the package tree


def test_probe_detects_torch_when_it_is_imported():
    """The check can fail: the same probe after a (stand-in, cheap) torch import reports it."""
    fake = "import sys, types\nsys.modules['torch'] = types.ModuleType('torch')\n"
    proc = subprocess.run(
        [sys.executable, "-c", fake + PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "service imported ['torch'" in proc.stderr
