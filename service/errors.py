"""Domain exceptions and the one JSON error shape every response uses.

Every error body is ``{"error": {"code": str, "message": str, "details": ... | absent}}``:
domain errors, request validation (422), unknown routes (404), wrong methods (405) and
unexpected failures (500). ``install_error_handlers`` wires it into an app.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

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

# Documented on every route in OpenAPI.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid parameters (code validation_error)"},
    503: {"model": ErrorResponse, "description": "No model loaded yet (code model_not_ready)"},
}


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


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception that reaches the app onto the one error shape."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
        return error_json(exc.status_code, exc.code, exc.message, exc.details, **headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean(list(exc.errors()))
        return error_json(422, "validation_error", _validation_message(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return error_json(exc.status_code, code, message, **(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_json(500, "internal_error", f"internal error: {type(exc).__name__}")
