"""The OpenAPI document says what the service answers and accepts: statuses, ids, bodies.

Each schema case is checked both ways: the document's JSON Schema (jsonschema_rs, what
schemathesis validates with) and the service agree on accepting or rejecting it.
"""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from contract.config import ConfigError, TrainConfig
from contract.jobspec import job_params
from service.app import create_app
from service.hyperparameters import NARROWER, NOT_HYPERPARAMETERS, Hyperparameters
from service.routes.interactions import MAX_TIMESTAMP
from service.routes.retrain import RetrainRequest
from service.settings import Settings
from tests.service.modelkit import auth

ERROR_BODY = {"$ref": "#/components/schemas/ErrorResponse"}
ADMIN_ROUTES = [
    ("post", "/retrain"),
    ("post", "/retrain/{job_id}/cancel"),
    ("post", "/models/{version}/activate"),
    ("post", "/interactions"),
]


def component(spec: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema_rs.validator_for(root)


def request_body(spec: dict[str, Any], path: str) -> jsonschema_rs.Validator:
    schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for(schema | {"components": spec["components"]})


def query_param(spec: dict[str, Any], path: str, name: str) -> jsonschema_rs.Validator:
    params = spec["paths"][path]["get"]["parameters"]
    return jsonschema_rs.validator_for(next(p["schema"] for p in params if p["name"] == name))


# ---- statuses ------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_and_ingest_routes_document_their_error_statuses(client, method, path) -> None:
    responses = client.app.openapi()["paths"][path][method]["responses"]
    assert {"401", "403", "413", "422", "503"} <= set(responses)
    assert "WWW-Authenticate" in responses["401"]["headers"]
    if path == "/retrain":
        assert "job_active" in responses["409"]["description"]


def test_every_documented_error_has_the_error_body(client) -> None:
    for path, ops in client.app.openapi()["paths"].items():
        for method, op in ops.items():
            errors = {s: r for s, r in op["responses"].items() if not s.startswith("2")}
            assert "413" in errors, (method, path)  # the body limit guards every route
            for status, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema == ERROR_BODY, (method, path, status)


@pytest.mark.parametrize("path", ["/recommend", "/retrain", "/interactions"])
def test_an_undecodable_body_is_a_documented_400(client, path: str) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    r = client.post(path, content=b'{"\xff": 1}', headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    assert "400" in client.app.openapi()["paths"][path]["post"]["responses"]


def test_405_allow_names_every_method_of_the_path(client) -> None:
    r = client.options("/retrain")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert r.json()["error"]["code"] == "method_not_allowed"


# ---- POST /retrain -------------------------------------------------------------------------
def test_hyperparameters_are_the_trainconfig_fields_a_job_may_set() -> None:
    names = list(TrainConfig.model_fields)
    assert list(Hyperparameters.model_fields) == [n for n in names if n not in NOT_HYPERPARAMETERS]
    assert NOT_HYPERPARAMETERS <= set(names)
    assert set(NARROWER) <= set(Hyperparameters.model_fields)


def non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A property's schema without null, default, title and description."""
    branches = [b for b in prop.get("anyOf", [prop]) if b != {"type": "null"}]
    assert len(branches) == 1, prop
    drop = ("default", "title", "description")
    return {k: v for k, v in branches[0].items() if k not in drop}


def test_hyperparameters_schema_is_trainconfigs() -> None:
    """Each hyperparameter's schema is TrainConfig's field (type, range, docstring), optional;
    only NARROWER's fields add constraints, and every one of TrainConfig's stays."""
    full = TrainConfig.model_json_schema()["properties"]
    hyper = Hyperparameters.model_json_schema()["properties"]
    for name, prop in hyper.items():
        assert prop["description"] == TrainConfig.model_fields[name].description, name
        assert {"type": "null"} in prop["anyOf"] and prop["default"] is None, name
        base, ours = non_null(full[name]), non_null(prop)
        if name in NARROWER:
            assert ours != base, name
            assert all(ours.get(k) is not None for k in base), name
        else:
            assert ours == base, name


def bound_cases() -> list[tuple[dict[str, Any], bool]]:
    """Hyperparameters at and past each bound of TrainConfig's schema (one field set)."""
    cases: list[tuple[dict[str, Any], bool]] = []
    full = TrainConfig.model_json_schema()["properties"]
    for name in Hyperparameters.model_fields:
        if name in NARROWER:
            continue
        p = non_null(full[name])
        step = 1 if p.get("type") == "integer" else 0.001
        if "minimum" in p:
            cases += [({name: p["minimum"]}, True), ({name: p["minimum"] - step}, False)]
        if "exclusiveMinimum" in p:
            low = p["exclusiveMinimum"]
            cases += [({name: low}, False), ({name: low + step}, True)]
        if "maximum" in p:
            cases += [({name: p["maximum"]}, True), ({name: p["maximum"] + step}, False)]
        if "enum" in p:
            cases += [({name: v}, True) for v in p["enum"]] + [({name: "nope"}, False)]
        if p.get("type") == "boolean":
            cases += [({name: True}, True), ({name: 1}, False)]
        if p.get("type") in ("integer", "number"):
            cases += [({name: "1"}, False), ({name: True}, False)]
    return cases


def test_trainconfig_bounds_schema_and_service_agree(settings: Settings) -> None:
    cases = bound_cases()
    assert len(cases) > 80
    with TestClient(create_app(settings)) as c:
        validator = component(c.app.openapi(), "RetrainRequest")
        for hyper, valid in cases:
            body: dict[str, Any] = {"hyperparameters": hyper}
            if "blend_weight" in hyper:  # a field of one objective only
                body["objective"] = "blend"
            r = c.post("/retrain", json=body, headers=auth())
            assert validator.is_valid(body) is valid, hyper
            assert r.status_code == (202 if valid else 422), (hyper, r.text)
            if valid:  # free the queue for the next case
                job_id = r.json()["job_id"]
                assert c.post(f"/retrain/{job_id}/cancel", headers=auth()).status_code == 200


def test_retrain_responses_document_the_stored_config(client) -> None:
    spec = client.app.openapi()
    schemas = spec["components"]["schemas"]
    ref = {"$ref": "#/components/schemas/TrainConfig"}
    assert schemas["JobAccepted"]["properties"]["train_config"]["$ref"] == ref["$ref"]
    assert ref in schemas["JobView"]["properties"]["train_config"]["anyOf"]
    assert set(schemas["TrainConfig"]["properties"]) == set(TrainConfig.model_fields)
    r = client.post("/retrain", json={"epochs": 2}, headers=auth())
    assert r.status_code == 202
    assert component(spec, "JobAccepted").is_valid(r.json())
    view = client.get(r.json()["status_url"]).json()
    assert component(spec, "JobView").is_valid(view)
    assert view["train_config"] == r.json()["train_config"]


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({}, True),
        ({"epochs": 2.0, "hyperparameters": {"lr": 5, "dim": 16.0, "seed": 0}}, True),
        ({"epochs": "2"}, False),
        ({"force": 1}, False),
        ({"objective": "bpr", "hyperparameters": {"sampler": "pair"}}, True),
        ({"objective": "bpr", "hyperparameters": {"sampler": "user"}}, False),
        ({"objective": "blend", "hyperparameters": {"blend_weight": 1.6}}, True),
        ({"hyperparameters": {"blend_weight": 1.6}}, False),
        ({"objective": "auto", "hyperparameters": {"blend_weight": 1.6}}, False),
        ({"objective": "blend", "hyperparameters": {"blend_weight": None}}, True),
        ({"hyperparameters": {"adaptive_tau": True, "tau": 0.6}}, True),
        ({"hyperparameters": {"adaptive_tau": True, "tau": 0.5}}, False),
        ({"hyperparameters": {"adaptive_tau": True, "tau": 0.5, "tau0": 0.2}}, True),
        ({"hyperparameters": {"ks": [5, 10, 20, 50], "early_stop_metric": "ndcg@10"}}, True),
        ({"hyperparameters": {"ks": [5, 20]}}, False),
        ({"hyperparameters": {"ks": [10, 20, 20]}}, False),
        ({"hyperparameters": {"early_stop_metric": "recall@5"}}, False),
        ({"hyperparameters": {"lr_decay": 1.0, "val_fraction": 0.5, "n_layers": 8}}, True),
        ({"hyperparameters": {"lr_decay": 1.01}}, False),
        ({"hyperparameters": {"objective": "bpr"}}, False),
        ({"hyperparameters": {"num_threads": 2}}, False),
        ({"hyperparameters": {"lr": None, "tau0": None}}, True),
        ({"dataset": "tiny"}, True),
        ({"dataset": "missing"}, False),
        ({"encoder": "lightgcn", "hyperparameters": {"optimizer": "sparse_adam"}}, False),
        (
            {"encoder": "lightgcn", "objective": "bpr", "hyperparameters": {"optimizer": "adam"}},
            True,
        ),
        ({"hyperparameters": {"optimizer": "sparse_adam", "weight_decay": 0.01}}, False),
        ({"hyperparameters": {"optimizer": "sparse_adam", "weight_decay": 0}}, True),
        ({"objective": "directau", "hyperparameters": {"weight_decay": 0.01}}, False),
        ({"objective": "bpr", "encoder": "lightgcn", "hyperparameters": {"weight_decay": 1}}, True),
        ({"objective": "bpr", "hyperparameters": {"optimizer": "adam", "weight_decay": 1}}, True),
    ],
)
def test_retrain_schema_and_service_agree(settings: Settings, body: dict, valid: bool) -> None:
    (settings.data_root / "tiny").mkdir(parents=True)
    with TestClient(create_app(settings)) as c:
        schema_ok = component(c.app.openapi(), "RetrainRequest").is_valid(body)
        r = c.post("/retrain", json=body, headers=auth())
    assert schema_ok is valid
    assert r.status_code == (202 if valid else 422), r.text


def dataset_schema(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["components"]["schemas"]["RetrainRequest"]["properties"]["dataset"]


def _service_accepts(body: dict[str, Any]) -> bool:
    """What POST /retrain does with a body before queueing it (pydantic, then job_params)."""
    try:
        req = RetrainRequest.model_validate(body)
        job_params(req.model_dump(exclude_none=True))
    except (ValidationError, ConfigError):
        return False
    return True


def test_optimizer_rules_schema_and_service_agree(client) -> None:
    """Every combination of encoder, objective, optimizer and weight_decay (absent, null or a
    value): the schema's REQUEST_RULES accept exactly what TrainConfig accepts."""
    validator = component(client.app.openapi(), "RetrainRequest")
    absent = object()
    counts = {True: 0, False: 0}
    for encoder, objective, optimizer, decay in itertools.product(
        [absent, None, "mf", "lightgcn"],
        [absent, None, "directspec", "directspec+", "bpr", "directau", "align"],
        [absent, None, "sgd", "adam", "sparse_adam"],
        [absent, None, 0, 0.0, 0.01],
    ):
        hyper = {k: v for k, v in [("optimizer", optimizer), ("weight_decay", decay)]}
        body = {"encoder": encoder, "objective": objective, "hyperparameters": hyper}
        body = {k: v for k, v in body.items() if v is not absent}
        body["hyperparameters"] = {k: v for k, v in hyper.items() if v is not absent}
        accepted = _service_accepts(body)
        assert validator.is_valid(body) is accepted, (body, accepted)
        counts[accepted] += 1
    assert counts[True] > 400 and counts[False] > 50, counts  # both sides are exercised


def test_the_document_lists_the_datasets_that_exist(settings: Settings) -> None:
    for name in ("b", "a", ".hidden"):
        (settings.data_root / name).mkdir(parents=True)
    (settings.data_root / "notes.txt").write_text("not a dataset")
    with TestClient(create_app(settings)) as c:
        assert dataset_schema(c.get("/openapi.json").json())["anyOf"][0]["enum"] == ["a", "b"]
        (settings.data_root / "c").mkdir()
        assert dataset_schema(c.get("/openapi.json").json())["anyOf"][0]["enum"] == ["a", "b", "c"]
        assert c.post("/retrain", json={"dataset": "notes.txt"}, headers=auth()).status_code == 422


def test_without_datasets_the_document_accepts_none(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        assert dataset_schema(c.app.openapi())["anyOf"] == [{"type": "null"}]


# ---- ids -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ids", "valid"),
    [(["u1", 0, 7.0], True), ([-1], False), ([True], False), ([2.5], False), (["u1\n"], False)],
)
def test_batch_ids_schema_and_service_agree(client, ids: list, valid: bool) -> None:
    body = {"user_ids": ids, "exclude": ids}
    schema_ok = request_body(client.app.openapi(), "/recommend").is_valid(body)
    r = client.post("/recommend", json=body)
    assert schema_ok is valid
    assert r.status_code == (200 if valid else 422), r.text
    if valid:
        assert [x["user_id"] for x in r.json()["results"]] == ["u1", "0", "7"]


@pytest.mark.parametrize(
    ("exclude", "valid"),
    [("i1,,i2,", True), (" i1 , i2", True), ("é,ü", True), ("i1,\ti2", False), ("x" * 257, False)],
)
def test_exclude_query_schema_and_service_agree(client, exclude: str, valid: bool) -> None:
    schema_ok = query_param(client.app.openapi(), "/recommend/{user_id}", "exclude").is_valid(
        exclude
    )
    r = client.get("/recommend/u0", params={"exclude": exclude})
    assert schema_ok is valid
    assert r.status_code == (200 if valid else 422), r.text


def test_path_id_with_a_trailing_newline_is_malformed(client) -> None:
    r = client.get("/recommend/u0%0A")
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["path", "user_id"]


@pytest.mark.parametrize(("value", "status"), [("+5", 200), (" 5 ", 200), ("1_0", 422), ("٣", 422)])
def test_query_integers_are_ascii_digits(client, value: str, status: int) -> None:
    assert client.get("/recommend/u0", params={"k": value}).status_code == status


# ---- POST /interactions --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "valid"),
    [
        ({"user_id": "u", "item_id": "i", "timestamp": None}, True),
        ({"user_id": "u", "item_id": "i", "timestamp": MAX_TIMESTAMP}, True),
        ({"user_id": "u", "item_id": "i", "timestamp": MAX_TIMESTAMP + 1}, False),
        ({"user_id": "u", "item_id": "i", "timestamp": 10**400}, False),
        ({"user_id": "u", "item_id": "i", "timestamp": -1}, False),
        ({"user_id": "u:1@x.y-z_ with spaces, é", "item_id": "i" * 256}, True),
        ({"user_id": "u", "item_id": "i" * 257}, False),
        ({"user_id": "u\tv", "item_id": "i"}, False),
        ({"user_id": "u\n", "item_id": "i"}, False),
        ({"user_id": 5, "item_id": "i"}, False),
    ],
)
def test_ingest_schema_and_service_agree(client, row: dict, valid: bool) -> None:
    body = {"interactions": [row]}
    op = client.app.openapi()["paths"]["/interactions"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    schema_ok = jsonschema_rs.validator_for(schema).is_valid(body)
    r = client.post("/interactions", json=body, headers=auth())
    assert schema_ok is valid
    assert r.status_code == (200 if valid else 422), r.text
