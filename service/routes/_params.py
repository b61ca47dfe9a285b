"""Path and query parsing for the hot endpoints, and its OpenAPI description.

GET /recommend and GET /similar parse their parameters here instead of through FastAPI's
per-parameter validation. Errors have the same body as FastAPI's 422s: code ``validation_error``
and pydantic-style details ``{"loc": ["query", name], "msg", "type", "input"}``. Unknown query
parameters are ignored, as FastAPI does.

Why it exists (measured): GET /recommend/{user_id} answered from the precomputed lists, the
same handler twice in one app, once parsing with this module and once with the parameters
declared to FastAPI (``Path(min_length, max_length, pattern)``, ``Query(ge, le)``, ``bool``,
``Query(pattern=ID_LIST_PATTERN)``, ``Literal["popular"] | None``), 10,000 requests a round
through the whole ASGI app (middleware included, no network), 7 interleaved rounds, medians,
two runs with the two routes mounted in either order (route matching is linear: the mounting
position alone moves a route ~10%); 2 shared Xeon cores, Python 3.11, FastAPI 0.165,
pydantic 2.14:

- ``?k=20``: 6,190-6,668 req/s with this module, 4,688-4,723 with FastAPI's validation
  (150-162 vs 212-213 µs a request): 32-41% more requests per core;
- ``?k=20&exclude_seen=true&exclude=i1,i2,i3&fallback=popular``: 4,033-4,781 vs
  3,561-3,587 req/s: 13-33% more.

Through starlette's TestClient both ways read the same 300-700 req/s (the client's own
1.5-3 ms a call and the shared cores' noise hide a 50-70 µs difference), hence the ASGI loop.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from contract.ids import ID_FORBIDDEN, ID_MAX_LEN, ID_PATTERN
from service.errors import InvalidRequest
from service.schemas import ID_SCHEMA, Fallback, json_int
from service.settings import Settings

_ID_RE = re.compile(rf"[^{ID_FORBIDDEN}]+")  # ID_PATTERN, for fullmatch (no "$" before a "\n")
_LIST_ID = rf"[^,{ID_FORBIDDEN}]{{0,{ID_MAX_LEN}}}"
ID_LIST_PATTERN = rf"^{_LIST_ID}(,{_LIST_ID})*$"
"""``query_id_list`` input: comma-separated entries of at most ID_MAX_LEN printable characters."""
_INT_RE = re.compile(r"[+-]?[0-9]{1,30}")  # ASCII digits; int() would take "1_0" and "٣" too
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_Choice = TypeVar("_Choice", bound=str)


def _invalid(name: str, msg: str, type_: str, value: Any, where: str = "query") -> InvalidRequest:
    detail: dict[str, Any] = {"loc": [where, name], "msg": msg, "type": type_}
    if value is not None and len(str(value)) <= 200:
        detail["input"] = value
    return InvalidRequest(f"{where}.{name}: {msg}", [detail])


def _checked_id(value: str, name: str, where: str) -> str:
    """`value` if it is an external id (1-256 characters, no control characters), else 422."""
    if len(value) > ID_MAX_LEN:
        raise _invalid(
            name,
            f"String should have at most {ID_MAX_LEN} characters",
            "string_too_long",
            value,
            where=where,
        )
    if not _ID_RE.fullmatch(value):
        raise _invalid(
            name,
            f"String should match pattern '{ID_PATTERN}'",
            "string_pattern_mismatch",
            value,
            where=where,
        )
    return value


def hot_route(documented: BaseRoute, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    """A plain Starlette route for a hot endpoint, to be matched before its FastAPI twin
    `documented` (which stays for the OpenAPI document): no dependency solving and no FastAPI
    request wrapper. The request's ``scope["route"]`` is the twin, as if it had matched (the
    metrics' route label). FastAPI copies plain routes when a router is included, so this is
    done by the endpoint, not by a Route subclass."""
    path = getattr(documented, "path", None)
    methods = getattr(documented, "methods", None)
    if not isinstance(path, str) or not methods:
        raise TypeError(f"{documented!r} is not a route with a path and methods")

    async def hot(request: Request) -> Response:
        request.scope["route"] = documented
        return await endpoint(request)

    return Route(path, hot, methods=sorted(methods), include_in_schema=False)


_NO_QUERY: dict[str, str] = {}


def query_params(request: Request) -> Mapping[str, str]:
    """The query as {name: value} (the last value of a repeated name, blank values kept), as
    starlette's ``request.query_params`` reads it. A query without ``%`` or ``+`` (the common
    ``?k=20``) needs no unquoting and is split here, ~10x faster than ``parse_qsl``."""
    raw: bytes = request.scope.get("query_string", b"")
    if not raw:
        return _NO_QUERY
    if b"%" in raw or b"+" in raw:
        return request.query_params
    return dict(part.partition("=")[::2] for part in raw.decode("latin-1").split("&") if part)


def path_id(request: Request, name: str) -> str:
    """An external id from the path, else 422."""
    return _checked_id(request.path_params[name], name, "path")


def query_id(qp: Mapping[str, str], name: str) -> str | None:
    """An optional external id from the query, else 422."""
    value = qp.get(name)
    return None if value is None else _checked_id(value, name, "query")


def query_int(qp: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = qp.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not _INT_RE.fullmatch(text):
        raise _invalid(
            name,
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
            raw,
        )
    value = int(text)
    if value < low:
        raise _invalid(
            name, f"Input should be greater than or equal to {low}", "greater_than_equal", raw
        )
    if value > high:
        raise _invalid(
            name, f"Input should be less than or equal to {high}", "less_than_equal", raw
        )
    return value


def query_bool(qp: Mapping[str, str], name: str, default: bool) -> bool:
    raw = qp.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _invalid(
        name, "Input should be a valid boolean, unable to interpret input", "bool_parsing", raw
    )


def query_choice(qp: Mapping[str, str], name: str, choices: tuple[_Choice, ...]) -> _Choice | None:
    """One of `choices` (typed as them: pass a tuple of Literal values), None when absent."""
    raw = qp.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        expected = " or ".join(f"'{c}'" for c in choices)
        raise _invalid(name, f"Input should be {expected}", "literal_error", raw)
    return choices[choices.index(raw)]  # raw, typed as one of the choices


def query_id_list(qp: Mapping[str, str], name: str, max_len: int) -> list[str]:
    """``a,b,c`` -> ["a", "b", "c"] (ID_LIST_PATTERN); entries are stripped and blank ones
    dropped; 422 for a malformed entry or more than ``max_len`` ids. Absent: []."""
    raw = qp.get(name)
    if not raw:
        return []
    ids = []
    for part in raw.split(","):
        if len(part) > ID_MAX_LEN or (part and not _ID_RE.fullmatch(part)):
            raise _invalid(
                name,
                f"malformed id {part[:64]!r} (1-{ID_MAX_LEN} printable characters)",
                "string_pattern_mismatch",
                None,
            )
        if part := part.strip():
            ids.append(part)
    if len(ids) > max_len:
        raise _invalid(name, f"at most {max_len} ids allowed, got {len(ids)}", "too_long", None)
    return ids


def query_id_set(qp: Mapping[str, str], name: str, max_len: int) -> list[str] | None:
    """``query_id_list`` for a list whose absence differs from an empty list (``include``):
    None when the parameter is absent, [] when it is present but blank."""
    if name not in qp:
        return None
    return query_id_list(qp, name, max_len)


def openapi_id_list(name: str, max_len: int, description: str) -> dict[str, Any]:
    """OpenAPI object for a comma-separated id list parsed by ``query_id_list``."""
    return openapi_query(
        name,
        {"type": "string", "pattern": ID_LIST_PATTERN},
        f"{description} Comma-separated ids, at most {max_len} (blank entries are ignored; "
        "more is a 422).",
    )


def openapi_path_id(name: str) -> dict[str, Any]:
    """OpenAPI object for an id path parameter parsed by ``path_id``."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": ID_SCHEMA,
    }


def openapi_query(
    name: str, schema: dict[str, Any], description: str, default: Any = None
) -> dict[str, Any]:
    """One OpenAPI query-parameter object (for ``openapi_extra``)."""
    if default is not None:
        schema = {**schema, "default": default}
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


# ---- the parameter table: each parameter of the hot routes defined once ----------------------
@dataclass(frozen=True)
class IntParam:
    """An integer in [low, high]: its query parser, its OpenAPI object and the type of the
    same field in a JSON body (POST /recommend), from one definition."""

    name: str
    low: int
    high: int
    default: int
    description: str

    def parse(self, qp: Mapping[str, str]) -> int:
        return query_int(qp, self.name, self.default, self.low, self.high)

    def openapi(self) -> dict[str, Any]:
        schema = {"type": "integer", "minimum": self.low, "maximum": self.high}
        return openapi_query(self.name, schema, self.description, self.default)

    def body_type(self) -> Any:
        """The body field's type (a strict int in range; ``3.0`` is one too)."""
        return json_int(self.low, self.high)


@dataclass(frozen=True)
class BoolParam:
    name: str
    default: bool
    description: str

    def parse(self, qp: Mapping[str, str]) -> bool:
        return query_bool(qp, self.name, self.default)

    def openapi(self) -> dict[str, Any]:
        return openapi_query(self.name, {"type": "boolean"}, self.description, self.default)


@dataclass(frozen=True)
class IdListParam:
    """Comma-separated external ids, at most `max_len` (absent: [])."""

    name: str
    max_len: int
    description: str

    def parse(self, qp: Mapping[str, str]) -> list[str]:
        return query_id_list(qp, self.name, self.max_len)

    def openapi(self) -> dict[str, Any]:
        return openapi_id_list(self.name, self.max_len, self.description)


@dataclass(frozen=True)
class IdSetParam:
    """An IdListParam whose absence differs from an empty list (``include``): None."""

    name: str
    max_len: int
    description: str

    def parse(self, qp: Mapping[str, str]) -> list[str] | None:
        return query_id_set(qp, self.name, self.max_len)

    def openapi(self) -> dict[str, Any]:
        return openapi_id_list(self.name, self.max_len, self.description)


@dataclass(frozen=True)
class ChoiceParam(Generic[_Choice]):
    name: str
    choices: tuple[_Choice, ...]
    description: str

    def parse(self, qp: Mapping[str, str]) -> _Choice | None:
        return query_choice(qp, self.name, self.choices)

    def openapi(self) -> dict[str, Any]:
        schema = {"type": "string", "enum": list(self.choices)}
        return openapi_query(self.name, schema, self.description)


@dataclass(frozen=True)
class IdParam:
    """An optional external id in the query."""

    name: str
    description: str

    def parse(self, qp: Mapping[str, str]) -> str | None:
        return query_id(qp, self.name)

    def openapi(self) -> dict[str, Any]:
        return openapi_query(self.name, ID_SCHEMA, self.description)


@dataclass(frozen=True)
class HotParams:
    """The query parameters of GET /recommend/{user_id} and GET /similar/{item_id} (and the
    matching fields of POST /recommend's body), from the settings: ``hot_params``."""

    k: IntParam
    offset: IntParam
    exclude_seen: BoolParam
    exclude: IdListParam
    include: IdSetParam
    fallback: ChoiceParam[Fallback]
    user_id: IdParam


def hot_params(settings: Settings) -> HotParams:
    """The one table of the hot routes' parameters (names, ranges, defaults, descriptions)."""
    max_k = settings.max_k
    return HotParams(
        k=IntParam("k", 1, max_k, settings.default_k, "Number of items"),
        offset=IntParam(
            "offset",
            0,
            max_k - 1,
            0,
            "Items skipped before the k returned (pagination; ranks continue at offset + 1). "
            f"The ranking stops at depth max_k = {max_k}: beyond it the answer is "
            "short and `short` says so.",
        ),
        exclude_seen=BoolParam(
            "exclude_seen",
            True,
            "Drop the user's seen items: every interaction known for the user (the model's "
            "train and held-out pairs, and items ingested since)",
        ),
        exclude=IdListParam(
            "exclude",
            settings.max_exclude,
            "Item ids to drop. Unknown ids are ignored and listed in `unknown_exclude`.",
        ),
        include=IdSetParam(
            "include",
            settings.max_exclude,
            "Rank only these item ids (seen and excluded items are still left out). Unknown "
            "ids are ignored and listed in `unknown_include`; present but blank ranks nothing.",
        ),
        fallback=ChoiceParam(
            "fallback",
            get_args(Fallback),
            "`popular`: answer an unknown user with the most popular items",
        ),
        user_id=IdParam(
            "user_id",
            "Leave out this user's seen items (train and held-out pairs) and those "
            "ingested since (404 `unknown_user` if neither is known)",
        ),
    )
