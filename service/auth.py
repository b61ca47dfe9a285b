"""Admin authentication: ``Authorization: Bearer <ADMIN_TOKEN>``.

Use it on any admin route: ``@router.post(..., dependencies=[AdminDep])`` or as a parameter
``_: Annotated[None, Depends(require_admin)]``. Outcomes (JSON error bodies):

- no ADMIN_TOKEN configured -> 503 ``admin_disabled`` (says how to set one)
- header missing, not ``Bearer``, or empty -> 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``
- wrong token -> 403 ``forbidden`` (constant-time comparison)
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import AuthError, ErrorStatus

_bearer = HTTPBearer(auto_error=False, description="The ADMIN_TOKEN environment variable")

HOW_TO_ENABLE = (
    "admin endpoints are disabled: start the service with ADMIN_TOKEN set, e.g. "
    "ADMIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
)


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Raise AuthError unless the request carries the configured admin token."""
    expected = request.app.state.ctx.settings.admin_token_value()
    if expected is None:
        raise AuthError(503, "admin_disabled", HOW_TO_ENABLE)
    if credentials is None:
        raise AuthError(401, "unauthorized", "missing or malformed 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise AuthError(403, "forbidden", "wrong admin token")


AdminDep = Depends(require_admin)

#: The error statuses ``require_admin`` answers, for ``service.errors.error_responses``.
ADMIN_ERRORS: tuple[ErrorStatus, ...] = (
    401,
    403,
    (503, "No ADMIN_TOKEN configured: admin endpoints are disabled (code admin_disabled)"),
)
