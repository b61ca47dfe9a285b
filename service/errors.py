"""Domain exceptions and the one JSON error shape every response uses.

Every error body is ``{"error": {"code": str, "message": str, "details": ... | absent}}``:
domain errors, request validation (422), unknown routes (404), wrong methods (405) and
unexpected failures (500). ``install_error_handlers`` wires it into an app.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match

from store.db import StoreUnavailable

log = logging.getLogger("specrec.service")


class ErrorBody(BaseModel):
    code: str
    """Machine-readable code, e.g. ``unknown_user``, ``validation_error``."""
    message: str
    """Human-readable explanation naming the offending value."""
    details: Any | None = None
    """Extra structured information (validation errors: the list of failing fields)."""


class ErrorResponse(BaseModel):
    """The body of every non-2xx response."""

    error: ErrorBody


class ServiceError(Exception):
    """Base of the domain errors; subclasses fix the HTTP status and code."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, details: Any | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnknownUser(ServiceError):
    status_code, code = 404, "unknown_user"


class UnknownItem(ServiceError):
    status_code, code = 404, "unknown_item"


class UnknownVersion(ServiceError):
    status_code, code = 404, "unknown_version"


class ModelNotReady(ServiceError):
    status_code, code = 503, "model_not_ready"


class ArtifactRefused(ServiceError):
    status_code, code = 409, "artifact_invalid"


class InvalidRequest(ServiceError):
    status_code, code = 422, "validation_error"


class AuthError(ServiceError):
    """401 / 403 / 503 for admin endpoints; sets WWW-Authenticate on 401."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.code = status_code, code


# Codes for plain HTTP statuses raised by Starlette itself (unknown route, wrong method, ...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

#: What an error status means on this API: the default OpenAPI description of each.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body could not be decoded (code bad_request)",
    401: "Missing or malformed `Authorization: Bearer <token>` (code unauthorized)",
    403: "Wrong token (code forbidden)",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body larger than SPECREC_MAX_BODY_BYTES (code payload_too_large)",
    422: "Invalid parameters or body (code validation_error)",
    503: "No model loaded yet (code model_not_ready)",
}

_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"description": "Always `Bearer`", "schema": {"type": "string"}}
}

ErrorStatus = int | tuple[int, str]
"""A status with its usual meaning (``ERROR_DESCRIPTIONS``), or ``(status, description)``."""


#: The 503 of a route that reads or writes the job or interaction store.
STORE_UNAVAILABLE: ErrorStatus = (
    503,
    "The job and interaction store (PostgreSQL) cannot be reached now; nothing was changed; "
    "Retry-After says when to try again (code store_unavailable)",
)


def error_responses(*statuses: ErrorStatus) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses, each with the ErrorResponse body.

    ``error_responses(404, 422)`` or ``error_responses((404, "Unknown user"), 422)``; the
    descriptions of a status given twice are joined ("...; or ...").
    """
    out: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, description = entry if isinstance(entry, tuple) else (entry, None)
        description = description or ERROR_DESCRIPTIONS[status]
        if status in out:
            description = f"{out[status]['description']}; or: {description}"
        out[status] = {"model": ErrorResponse, "description": description}
        if status == 401:
            out[status]["headers"] = _WWW_AUTHENTICATE
    return out


def error_json(
    status_code: int, code: str, message: str, details: Any | None = None, **headers: str
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status_code, headers=headers or None)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first.get('msg', 'invalid')}{more}"


def _clean(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors reduced to JSON-safe {loc, msg, type, input?} (ctx may hold exceptions)."""
    out = []
    for e in errors:
        item = {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")}
        if isinstance(e.get("input"), str | int | float | bool) and len(str(e["input"])) <= 200:
            item["input"] = e["input"]
        out.append(item)
    return out


def _allowed_methods(routes: Sequence[BaseRoute], request: Request) -> str:
    methods: set[str] = set()
    for route in routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute] = ()) -> None:
    """Map every exception that reaches the app onto the one error shape.

    ``routes``: the app's routes, so that a 405's ``Allow`` names the methods of all routes on
    the path (Starlette's names only those of the first one).
    """

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
        return error_json(exc.status_code, exc.code, exc.message, exc.details, **headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_json(
            503,
            "store_unavailable",
            f"the job and interaction store cannot be reached now; nothing was changed ({exc})",
            **{"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean(list(exc.errors()))
        return error_json(422, "validation_error", _validation_message(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        if exc.status_code == 405 and routes:
            headers["Allow"] = _allowed_methods(routes, request)
        return error_json(exc.status_code, code, message, **headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_json(500, "internal_error", f"internal error: {type(exc).__name__}")
