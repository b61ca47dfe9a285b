"""Request body size limit: 413 (code ``payload_too_large``) before a large body is read.

A pure ASGI middleware: a ``Content-Length`` above the limit is answered at once, without calling
the app; a body without one (chunked) is counted as it arrives and reading stops as soon as it
passes the limit. The error body is the one every error has (``service.errors``).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_json


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    An HTTPException, so FastAPI's body parsing re-raises it (instead of turning it into a 400)
    and the app's handler answers it with the usual JSON error body.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit), headers=dict(_CLOSE))


_CLOSE = {"Connection": "close"}  # the rest of the body is never read


def _message(limit: int) -> str:
    return f"request body larger than {limit} bytes (SPECREC_MAX_BODY_BYTES)"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length before the app sees it
    return None


class BodyLimitMiddleware:
    """Answer 413 to requests whose body is larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_json(413, "payload_too_large", _message(self.max_bytes), **_CLOSE)
        await response(scope, receive, send)
