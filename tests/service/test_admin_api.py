"""Admin auth (401/403/503) and the model registry endpoints (GET /models, activate)."""

from __future__ import annotations

import hmac

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from contract.artifact import ModelRegistry
from contract.manifest import TrainedOn
from service.app import create_app
from service.auth import AdminDep, require_admin
from service.deps import CtxDep, ServingDep, SettingsDep
from service.settings import Settings
from tests.service.modelkit import ADMIN_TOKEN, auth, make_model, publish


@pytest.fixture
def two_versions(settings):
    """v1 then v2 published; CURRENT = v2."""
    v1 = publish(settings.registry_root, make_model(seed=1), metrics={"recall@20": 0.11})
    v2 = publish(
        settings.registry_root,
        make_model(seed=2),
        metrics={"recall@20": 0.22},
        extra={"trained_on": TrainedOn.counted("all", 120, 4, 100, 20).to_dict()},
    )
    return v1, v2


UNAUTHORIZED = {
    "error": {
        "code": "unauthorized",
        "message": "missing or malformed 'Authorization: Bearer <token>'",
    }
}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": ADMIN_TOKEN},
    ],
    ids=["missing", "basic", "empty-bearer", "no-scheme"],
)
def test_activate_without_a_bearer_token_is_401(settings, two_versions, headers):
    with TestClient(create_app(settings)) as c:
        r = c.post(f"/models/{two_versions[0]}/activate", headers=headers)
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/readyz").json()["model_version"] == two_versions[1]  # unchanged


def test_activate_with_a_wrong_token_is_403(settings, two_versions):
    with TestClient(create_app(settings)) as c:
        r = c.post(f"/models/{two_versions[0]}/activate", headers=auth(ADMIN_TOKEN + "x"))
        assert r.status_code == 403
        assert r.json() == {"error": {"code": "forbidden", "message": "wrong admin token"}}


def test_admin_endpoints_are_refused_without_a_configured_token(tmp_path, two_versions):
    settings = Settings(home=tmp_path, watch=False)  # same registry as two_versions
    assert settings.admin_token is None
    with TestClient(create_app(settings)) as c:
        r = c.post(f"/models/{two_versions[0]}/activate", headers=auth())
        assert r.status_code == 503
        err = r.json()["error"]
        assert err["code"] == "admin_disabled"
        assert "ADMIN_TOKEN" in err["message"] and "secrets.token_urlsafe" in err["message"]


def test_rollback_activates_the_older_version_and_serves_it(settings, two_versions):
    v1, v2 = two_versions
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").json()["model_version"] == v2
        r = c.post(f"/models/{v1}/activate", headers=auth())
        assert r.status_code == 200
        assert r.json() == {"version": v1, "serving": v1, "previous": v2}
        assert ModelRegistry(settings.registry_root).pointer() == {"version": v1, "previous": v2}
        assert c.get("/recommend/u0").json()["model_version"] == v1
        # the spectrum report now shows v2 as the previous model
        assert c.get("/health/spectrum").json()["previous"]["model_version"] == v2


def test_activate_unknown_and_malformed_versions(client):
    r = client.post("/models/v0-nope/activate", headers=auth())
    assert (r.status_code, r.json()) == (
        404,
        {"error": {"code": "unknown_version", "message": "no model version 'v0-nope'"}},
    )
    r = client.post("/models/.hidden/activate", headers=auth())
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["path", "version"]


def test_activate_corrupt_version_is_409_and_keeps_serving(settings, two_versions):
    v1, v2 = two_versions
    emb = settings.registry_root / "versions" / v1 / "item_emb.npy"
    data = bytearray(emb.read_bytes())
    data[-5] ^= 0xFF
    emb.write_bytes(bytes(data))
    with TestClient(create_app(settings)) as c:
        r = c.post(f"/models/{v1}/activate", headers=auth())
        assert r.status_code == 409
        assert r.json() == {
            "error": {
                "code": "artifact_invalid",
                "message": f"version {v1} cannot be served: {v1}: checksum mismatch for "
                "item_emb.npy",  # the version, not the server's path
            }
        }
        assert c.get("/readyz").json()["model_version"] == v2
        assert ModelRegistry(settings.registry_root).current() == v2
        listed = {v["version"]: v for v in c.get("/models").json()["versions"]}
        assert listed[v1]["refused"] == f"{v1}: checksum mismatch for item_emb.npy"


def test_models_lists_versions_with_metrics_and_flags(settings, two_versions):
    v1, v2 = two_versions
    with TestClient(create_app(settings)) as c:
        body = c.get("/models").json()
    assert (body["current"], body["previous"], body["serving"]) == (v2, v1, v2)
    assert [v["version"] for v in body["versions"]] == [v1, v2]
    first, second = body["versions"]
    assert first["metrics"] == {"recall@20": 0.11} and second["metrics"] == {"recall@20": 0.22}
    assert (first["current"], first["previous"], first["serving"]) == (False, True, False)
    assert (second["current"], second["previous"], second["serving"]) == (True, False, True)
    assert second["shape"]["n_users"] == 30 and second["shape"]["n_items"] == 50
    assert second["refused"] is None and second["config"] == {"test": True}
    # which pairs each model saw (v1: an older manifest without the record)
    assert first["trained_on"] is None
    assert second["trained_on"] == {
        "pairs": "all",
        "n_pairs": 120,
        "epochs": 4,
        "evaluated_on": {"train_pairs": 100, "test_pairs": 20},
    }


def test_models_when_nothing_is_published(settings):
    with TestClient(create_app(settings)) as c:
        r = c.get("/models")
    assert r.json() == {"current": None, "previous": None, "serving": None, "versions": []}


def test_require_admin_is_reusable_on_a_new_router(settings, published):
    """The extension point of POST /retrain: a router with AdminDep passed to create_app."""
    router = APIRouter()

    @router.post("/extra/jobs", status_code=202, dependencies=[AdminDep])
    async def extra_job() -> dict[str, str]:
        return {"job_id": "j1"}

    @router.get("/whoami")
    async def whoami(_: None = Depends(require_admin)) -> dict[str, bool]:
        return {"admin": True}

    def build(s: Settings) -> APIRouter:  # a router factory gets the app's settings
        r = APIRouter()

        @r.get("/serving")
        async def serving(model: ServingDep, ctx: CtxDep, cfg: SettingsDep) -> dict[str, object]:
            return {
                "version": model.version,
                "home": str(cfg.home),
                "same": cfg is s,
                "registry": str(ctx.registry.root),
            }

        return r

    with TestClient(create_app(settings, routers=[router, build])) as c:
        assert c.post("/extra/jobs").status_code == 401
        assert c.post("/extra/jobs", headers=auth("nope")).status_code == 403
        assert c.post("/extra/jobs", headers=auth()).json() == {"job_id": "j1"}
        assert c.get("/whoami", headers=auth()).json() == {"admin": True}
        assert c.get("/serving").json() == {
            "version": published,
            "home": str(settings.home),
            "same": True,
            "registry": str(settings.registry_root),
        }


def test_token_comparison_is_constant_time(monkeypatch, settings, published):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("service.auth.hmac.compare_digest", spy)
    with TestClient(create_app(settings)) as c:
        c.post("/models/x/activate", headers=auth("guess"))
    assert calls == [(b"guess", ADMIN_TOKEN.encode())]
