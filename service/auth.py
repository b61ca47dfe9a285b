"""Admin authentication: ``Authorization: Bearer <ADMIN_TOKEN>``, checked before the body is read.

Use it on any admin route: ``@router.post(..., dependencies=[AdminDep])`` or as a parameter
``_: Annotated[None, Depends(require_admin)]``, on an ``APIRouter(route_class=AuthFirstRoute)``.
Outcomes (JSON error bodies):

- no ADMIN_TOKEN configured -> 503 ``admin_disabled`` (says how to set one)
- header missing, not ``Bearer``, or empty -> 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``
- wrong token -> 403 ``forbidden`` (constant-time comparison)

FastAPI reads and parses a route's body before it runs the route's dependencies, so an
unauthenticated client could make the service parse (and hold) any body up to the size limit.
Routers of admin routes are therefore ``APIRouter(route_class=AuthFirstRoute)``: a route that
depends on a ``checked_before_body`` dependency (``require_admin``) judges the request from its
headers alone first and refuses it without reading the body; the dependency itself still runs
(and documents the bearer scheme in OpenAPI).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.responses import Response

from service.errors import AuthError, ErrorStatus
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="The ADMIN_TOKEN environment variable")

HOW_TO_ENABLE = (
    "admin endpoints are disabled: start the service with ADMIN_TOKEN set, e.g. "
    "ADMIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
)


@dataclass(frozen=True)
class TokenGuard:
    """Which bearer tokens open a route: ``tokens(settings)``, none configured -> 503."""

    bearer: HTTPBearer
    tokens: Callable[[Settings], Sequence[str]]
    wrong: str
    """The 403 message."""

    def check(self, settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
        """Raise AuthError unless ``credentials`` carry one of the configured tokens."""
        tokens = [t for t in self.tokens(settings) if t]
        if not tokens:
            raise AuthError(503, "admin_disabled", HOW_TO_ENABLE)
        if credentials is None:
            raise AuthError(
                401, "unauthorized", "missing or malformed 'Authorization: Bearer <token>'"
            )
        given = credentials.credentials.encode()
        if not any([hmac.compare_digest(given, t.encode()) for t in tokens]):  # compare all
            raise AuthError(403, "forbidden", self.wrong)

    async def check_headers(self, conn: HTTPConnection) -> None:
        """``check`` from the request's headers alone (the bearer parses them as FastAPI does)."""
        self.check(conn.app.state.ctx.settings, await self.bearer(conn))


ADMIN_GUARD = TokenGuard(_bearer, lambda s: [s.admin_token_value() or ""], "wrong admin token")

_GUARDED: dict[Callable[..., Any], TokenGuard] = {}
_Dep = TypeVar("_Dep", bound=Callable[..., Any])


def checked_before_body(guard: TokenGuard) -> Callable[[_Dep], _Dep]:
    """Mark an auth dependency: routes depending on it run ``guard`` before reading the body."""

    def mark(dependency: _Dep) -> _Dep:
        _GUARDED[dependency] = guard
        return dependency

    return mark


@checked_before_body(ADMIN_GUARD)
def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Raise AuthError unless the request carries the configured admin token."""
    ADMIN_GUARD.check(request.app.state.ctx.settings, credentials)


AdminDep = Depends(require_admin)

#: The error statuses ``require_admin`` answers, for ``service.errors.error_responses``.
ADMIN_ERRORS: tuple[ErrorStatus, ...] = (
    401,
    403,
    (503, "No ADMIN_TOKEN configured: admin endpoints are disabled (code admin_disabled)"),
)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


class AuthFirstRoute(APIRoute):
    """An APIRoute that runs the guards of its ``checked_before_body`` dependencies on the
    headers before FastAPI reads the body: ``APIRouter(route_class=AuthFirstRoute)``.

    A refused request raises AuthError (the app answers it with the usual JSON error body)
    without a byte of its body read; routes without such a dependency are left as they are.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        guards = [_GUARDED[c] for c in _calls(self.dependant) if c in _GUARDED]
        if not guards:
            return handler

        async def guarded(request: Request) -> Response:
            for guard in guards:
                await guard.check_headers(request)
            return await handler(request)

        return guarded
