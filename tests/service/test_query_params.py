"""service.routes._params.query_params reads a query exactly as starlette's QueryParams."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams
from starlette.requests import Request

from service.routes._params import query_params


def request(raw: bytes) -> Request:
    return Request({"type": "http", "query_string": raw, "headers": []})


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"k=20",
        b"k=20&k=5",  # the last value wins
        b"k=&exclude_seen",  # blank values kept
        b"a=1&&b=2&",  # empty pieces skipped
        b"=x&include",
        b"exclude=i1,i2&fallback=popular",
        "include=\u00e9,\u00fc".encode(),  # raw UTF-8: latin-1 as starlette reads it
        b"include=%C3%A9&k=3",  # escapes: starlette's own parser
        b"q=a+b",
    ],
)
def test_query_params_match_starlette(raw: bytes) -> None:
    expected = dict(QueryParams(raw.decode("latin-1")))
    got = query_params(request(raw))
    assert dict(got) == expected
    for name in expected:
        assert got.get(name) == QueryParams(raw.decode("latin-1")).get(name)
