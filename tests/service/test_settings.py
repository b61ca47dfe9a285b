"""Settings: environment names, derived paths, refused placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, search_threads_env


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
