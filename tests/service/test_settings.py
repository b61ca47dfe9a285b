"""Settings: environment names, derived paths, refused placeholders."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, launcher_env, search_threads_env

REPO = Path(__file__).resolve().parents[2]


def test_environment_names(monkeypatch):
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("ADMIN_TOKEN", "a-real-token")
    monkeypatch.setenv("SPECREC_HOME", "/srv/specrec")
    monkeypatch.setenv("SPECREC_INDEX_KIND", "hnsw")
    monkeypatch.setenv("SPECREC_WATCH_INTERVAL_S", "0.5")
    monkeypatch.setenv("SPECREC_PORT", "1")  # the prefixed name is not the port
    s = Settings()
    assert (s.port, s.host, s.admin_token_value()) == (9001, "0.0.0.0", "a-real-token")
    assert s.registry_root == Path("/srv/specrec/models")
    assert (s.index_kind, s.watch_interval_s) == ("hnsw", 0.5)
    monkeypatch.setenv("SPECREC_MODELS_DIR", "/elsewhere")
    assert Settings().registry_root == Path("/elsewhere")


@pytest.mark.parametrize("token", ["changethis", "ChangeThis", " changethis "])
def test_placeholder_admin_token_is_refused(monkeypatch, token):
    monkeypatch.setenv("ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match="ADMIN_TOKEN is a placeholder"):
        Settings()


def test_blank_admin_token_means_unset(monkeypatch):
    monkeypatch.setenv("ADMIN_TOKEN", "  ")
    assert Settings().admin_token is None


def test_token_is_not_printed():
    assert "s3cret-value" not in repr(Settings(admin_token="s3cret-value"))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"index_kind": "lsh"}, "index_kind"),
        ({"healthy_erank_ratio": 0.1, "collapsed_erank_ratio": 0.3}, "must not exceed"),
        ({"default_k": 50, "max_k": 10}, "exceeds max_k"),
        ({"port": 0}, "port"),
    ],
)
def test_invalid_values_are_refused(kw, match):
    with pytest.raises(ValidationError, match=match):
        Settings(**kw)


def test_search_threads_env_does_not_override_the_operator(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    env = search_threads_env(1)
    assert "OMP_NUM_THREADS" not in env and env["OPENBLAS_NUM_THREADS"] == "1"


def _launcher(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPECREC_")}
    clean = {k: v for k, v in clean.items() if k not in ("HOST", "PORT", "ADMIN_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "service.settings"],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_launcher_asks_the_settings_where_things_live(tmp_path: Path) -> None:
    """scripts/run.sh evaluates `python -m service.settings`: the paths are the settings' and
    contract.layout's (home relative to where it runs), quoted for the shell."""
    out = _launcher({}, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"SPECREC_HOME={tmp_path / 'var'}",
        f"models_dir={tmp_path / 'var' / 'models'}",
        f"default_data={tmp_path / 'var' / 'data' / 'default'}",
        "HOST=127.0.0.1",
        "PORT=8000",
    ]
    home = tmp_path / "a home"
    env = {"SPECREC_HOME": str(home), "SPECREC_MODELS_DIR": "m", "HOST": "0.0.0.0", "PORT": "9"}
    out = _launcher(env, tmp_path)
    assert out.returncode == 0, out.stderr
    parsed = dict(shlex.split(line)[0].split("=", 1) for line in out.stdout.splitlines())
    assert parsed == {
        "SPECREC_HOME": str(home),
        "models_dir": str(tmp_path / "m"),
        "default_data": str(home / "data" / "default"),
        "HOST": "0.0.0.0",
        "PORT": "9",
    }
    assert launcher_env(Settings(home=home))["default_data"] == parsed["default_data"]


def test_the_launcher_refuses_invalid_settings_in_one_message(tmp_path: Path) -> None:
    out = _launcher({"ADMIN_TOKEN": "changethis"}, tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("specrec: invalid settings:") and "placeholder" in out.stderr
