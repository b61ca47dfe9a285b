"""POST /interactions: durable feedback ingestion (admin token or the ingest token).

A batch is validated row by row first; any bad row rejects the whole batch (422 with every
bad row's index and reason) and nothing is written. Accepted rows are stored in one SQLite
transaction; the next retrain trains on a snapshot of all of them, so new users and items
become servable after it.
"""

# No `from __future__ import annotations`: FastAPI must see the closure values in annotations.

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.auth import HOW_TO_ENABLE
from service.errors import (
    STORE_UNAVAILABLE,
    AuthError,
    ErrorStatus,
    InvalidRequest,
    ServiceError,
    error_responses,
)
from service.schemas import ID_SCHEMA
from service.settings import Settings
from store.feedback import FeedbackStore, Interaction, row_problem
from store.once import Once

_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN or SPECREC_INGEST_TOKEN")
ROW_FIELDS = {"user_id", "item_id", "timestamp"}
_EXAMPLE = {"interactions": [{"user_id": "user_9", "item_id": "item_3", "timestamp": 1767225600}]}
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z


class BatchTooLarge(ServiceError):
    status_code, code = 413, "batch_too_large"


class IngestAccepted(BaseModel):
    accepted: int
    """Rows stored by this call."""
    total: int
    """Rows in the store now (all of them go into the next retrain)."""


def _require_ingest(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    settings: Settings = request.app.state.ctx.settings
    tokens = [t for t in (settings.admin_token_value(), settings.ingest_token_value()) if t]
    if not tokens:
        raise AuthError(503, "admin_disabled", HOW_TO_ENABLE)
    if credentials is None:
        raise AuthError(401, "unauthorized", "missing or malformed 'Authorization: Bearer <token>'")
    given = credentials.credentials.encode()
    if not any(hmac.compare_digest(given, t.encode()) for t in tokens):  # no early exit
        raise AuthError(403, "forbidden", "wrong token")


#: The error statuses ``_require_ingest`` answers, for ``service.errors.error_responses``.
INGEST_ERRORS: tuple[ErrorStatus, ...] = (
    401,
    403,
    (503, "Neither ADMIN_TOKEN nor SPECREC_INGEST_TOKEN is set (code admin_disabled)"),
)


def _parse_row(i: int, row: Any) -> tuple[Interaction | None, str | None]:
    if not isinstance(row, dict):
        return None, f"expected an object, got {type(row).__name__}"
    unknown = sorted(set(row) - ROW_FIELDS)
    if unknown:
        return None, f"unknown field(s) {unknown}; allowed: {sorted(ROW_FIELDS)}"
    missing = sorted({"user_id", "item_id"} - set(row))
    if missing:
        return None, f"missing field(s) {missing}"
    ts = row.get("timestamp")
    if isinstance(ts, bool) or (ts is not None and not isinstance(ts, int | float)):
        return None, f"timestamp {ts!r} must be a number of unix seconds"
    if ts is not None and not 0 <= ts <= MAX_TIMESTAMP:  # also refuses nan and inf
        return None, f"timestamp {ts!r} must be unix seconds in [0, {MAX_TIMESTAMP}]"
    item = Interaction(row["user_id"], row["item_id"], None if ts is None else float(ts))
    problem = row_problem(item)
    return (None, problem) if problem else (item, None)


def request_schema(max_rows: int) -> dict[str, Any]:
    """OpenAPI schema of the body: exactly what ``_parse_row`` and the handler accept."""
    row = {
        "type": "object",
        "additionalProperties": False,
        "required": ["user_id", "item_id"],
        "properties": {
            "user_id": ID_SCHEMA,
            "item_id": ID_SCHEMA,
            "timestamp": {
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": MAX_TIMESTAMP},
                    {"type": "null"},
                ],
                "description": "Unix seconds; absent or null: the ingestion time",
            },
        },
    }
    rows = {"type": "array", "minItems": 1, "maxItems": max_rows, "items": row}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["interactions"],
        "properties": {"interactions": rows},
    }


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["interactions"])
    max_rows = settings.max_ingest_batch
    feedback = Once(lambda: FeedbackStore(settings.feedback_db))  # built at first use

    @router.post(
        "/interactions",
        response_model=IngestAccepted,
        dependencies=[Depends(_require_ingest)],
        summary="Ingest a batch of interactions (admin or ingest token)",
        responses=error_responses(
            *INGEST_ERRORS,
            STORE_UNAVAILABLE,
            400,
            (
                413,
                "More rows than SPECREC_MAX_INGEST_BATCH (code batch_too_large), or a body "
                "larger than SPECREC_MAX_BODY_BYTES (code payload_too_large)",
            ),
            (422, "A malformed body or bad rows, each listed (code validation_error)"),
        ),
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": request_schema(max_rows), "example": _EXAMPLE}
                }
            }
        },
    )
    async def ingest(request: Request, body: Annotated[Any, Body()]) -> dict[str, int]:
        """Body ``{"interactions": [{"user_id", "item_id", "timestamp"?}, ...]}``: ids are
        1-256 characters without control characters (contract.ids); timestamp is unix seconds
        (default: now). All rows or none: one bad row rejects the batch with every bad row's
        index."""
        if not isinstance(body, dict) or set(body) != {"interactions"}:
            raise InvalidRequest(
                'body must be an object with exactly one key, "interactions"',
                [
                    {
                        "loc": ["body"],
                        "msg": 'expected {"interactions": [...]}',
                        "type": "value_error",
                    }
                ],
            )
        rows = body["interactions"]
        if not isinstance(rows, list) or not rows:
            raise InvalidRequest(
                "body.interactions must be a non-empty list",
                [
                    {
                        "loc": ["body", "interactions"],
                        "msg": "non-empty list expected",
                        "type": "value_error",
                    }
                ],
            )
        if len(rows) > max_rows:
            raise BatchTooLarge(
                f"{len(rows)} rows in one batch, at most {max_rows} allowed "
                "(SPECREC_MAX_INGEST_BATCH); split the batch",
                {"rows": len(rows), "max_rows": max_rows},
            )
        parsed: list[Interaction] = []
        bad: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            item, problem = _parse_row(i, row)
            if problem:
                bad.append({"index": i, "reason": problem})
            else:
                parsed.append(item)  # type: ignore[arg-type]
        if bad:
            more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
            raise InvalidRequest(
                f"row {bad[0]['index']}: {bad[0]['reason']}{more}; nothing was stored", bad
            )
        total = await run_in_threadpool(feedback().append, parsed)
        fresh = request.app.state.ctx.fresh
        if fresh is not None:  # fold the rows in from the next request on
            fresh.invalidate()
        return {"accepted": len(parsed), "total": total}

    return router
