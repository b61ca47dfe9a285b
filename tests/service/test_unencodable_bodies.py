"""Bodies holding values the service cannot write back as they came: a lone surrogate escape
(``"\\ud800"``: not Unicode text, UTF-8 cannot encode it) and ``NaN``, ``Infinity`` or
``1e400`` (Python's json reads them; JSON has no such numbers).

Every POST route answers them with a 4xx and the usual JSON error body (never a 500 from encoding
the error that quotes the value), and nothing is stored or queued.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from store.feedback import FeedbackStore
from tests.service.modelkit import auth

LONE = "\\ud800"  # the JSON escape, as sent on the wire: the decoded string is "\ud800"
JSON = {"Content-Type": "application/json", **auth()}
JOB = "0" * 32


def _post(client: TestClient, path: str, raw: str):
    return client.post(path, content=raw.encode("ascii"), headers=JSON)


def _error(r) -> dict:
    assert r.headers["content-type"] == "application/json", r.text
    return r.json()["error"]


@pytest.mark.parametrize(
    ("raw", "loc", "value"),
    [
        (f'{{"user_ids": ["{LONE}"], "k": 3}}', ["body", "user_ids", 0], "\ud800"),
        (f'{{"user_ids": ["u1{LONE}x"], "k": 3}}', ["body", "user_ids", 0], "u1\ud800x"),
        (f'{{"history": ["{LONE}"], "k": 3}}', ["body", "history", 0], "\ud800"),
        (f'{{"user_ids": ["u1"], "exclude": ["{LONE}"]}}', ["body", "exclude", 0], "\ud800"),
        (f'{{"user_ids": ["u1"], "{LONE}": 1}}', ["body"], "\ud800"),
    ],
)
def test_recommend_batch_refuses_lone_surrogates_with_422(
    client: TestClient, raw: str, loc: list, value: str
) -> None:
    r = _post(client, "/recommend", raw)
    assert r.status_code == 422, r.text
    error = _error(r)
    assert error["code"] == "validation_error"
    # the offending value is quoted back as the JSON escape the client sent
    assert error["details"] == [
        {
            "loc": loc,
            "msg": "Input should be a valid string, unable to parse raw data as a unicode string",
            "type": "string_unicode",
            "input": value,
        }
    ]
    assert r.content.count(b"\\ud800") == 1  # escaped on the wire: the body is ASCII


@pytest.mark.parametrize(
    "raw",
    [
        f'{{"interactions": [{{"user_id": "{LONE}", "item_id": "i1"}}]}}',
        f'{{"interactions": [{{"user_id": "u1", "item_id": "a{LONE}"}}]}}',
        f'{{"interactions": [{{"user_id": "u1", "item_id": "i1", "{LONE}": 1}}]}}',
        f'{{"interactions": [{{"user_id": "u1", "item_id": "i1", "timestamp": "{LONE}"}}]}}',
        f'{{"{LONE}": []}}',
    ],
)
def test_interactions_refuse_lone_surrogates_and_store_nothing(
    client: TestClient, raw: str
) -> None:
    r = _post(client, "/interactions", raw)
    assert r.status_code == 422, r.text
    assert _error(r)["code"] == "validation_error"
    assert FeedbackStore(client.app.state.ctx.settings.feedback_db).rows() == []


def test_an_id_with_a_lone_surrogate_names_the_row(client: TestClient) -> None:
    raw = (
        '{"interactions": [{"user_id": "ok", "item_id": "i1"}, '
        f'{{"user_id": "u{LONE}", "item_id": "i1"}}]}}'
    )
    error = _error(_post(client, "/interactions", raw))
    assert error["details"] == [
        {
            "index": 1,
            "reason": "user_id 'u\\ud800' is not a valid id "
            "(1-256 characters, no control characters, no lone surrogates)",
        }
    ]


@pytest.mark.parametrize(
    "raw",
    [
        f'{{"dataset": "{LONE}"}}',
        f'{{"encoder": "{LONE}"}}',
        f'{{"{LONE}": 1}}',
        f'{{"hyperparameters": {{"{LONE}": 1}}}}',
        f'{{"hyperparameters": {{"lr": "{LONE}"}}}}',
    ],
)
def test_retrain_refuses_lone_surrogates_with_422(client: TestClient, raw: str) -> None:
    r = _post(client, "/retrain", raw)
    assert r.status_code == 422, r.text
    assert _error(r)["code"] == "validation_error"
    assert client.get("/retrain").json() == {"jobs": []}  # nothing queued


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"/retrain/{JOB}/cancel", 404, "unknown_job"),
        ("/models/v-none/activate", 404, "unknown_version"),
    ],
)
def test_routes_without_a_body_ignore_one_with_lone_surrogates(
    client: TestClient, path: str, status: int, code: str
) -> None:
    r = _post(client, path, f'{{"{LONE}": "{LONE}"}}')
    assert r.status_code == status, r.text
    assert _error(r)["code"] == code


def test_a_lone_surrogate_in_a_404_message_is_quoted_as_its_escape(client: TestClient) -> None:
    """A path segment decodes to U+FFFD, never to a surrogate; the error is still JSON."""
    r = client.get("/recommend/%ED%A0%80")
    assert r.status_code == 404
    assert _error(r)["message"].startswith("unknown user_id '\ufffd")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize(
    ("path", "template", "loc"),
    [
        ("/recommend", '{{"user_ids": ["u1"], "k": {}}}', ["body", "k"]),
        ("/retrain", '{{"epochs": {}}}', ["body", "epochs"]),
        ("/retrain", '{{"hyperparameters": {{"lr": {}}}}}', ["body", "hyperparameters", "lr"]),
    ],
)
def test_non_finite_numbers_are_422_without_the_input(
    client: TestClient, number: str, path: str, template: str, loc: list
) -> None:
    r = _post(client, path, template.format(number))
    assert r.status_code == 422, r.text
    error = _error(r)
    assert error["code"] == "validation_error"
    assert [d["loc"] for d in error["details"]][:1] == [loc]
    assert all("input" not in d for d in error["details"])  # no JSON form to quote it in
    assert client.get("/retrain").json() == {"jobs": []}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_a_non_finite_timestamp_is_a_bad_row(client: TestClient, number: str) -> None:
    raw = f'{{"interactions": [{{"user_id": "u1", "item_id": "i1", "timestamp": {number}}}]}}'
    r = _post(client, "/interactions", raw)
    assert r.status_code == 422, r.text
    assert [d["index"] for d in _error(r)["details"]] == [0]
    assert FeedbackStore(client.app.state.ctx.settings.feedback_db).rows() == []
