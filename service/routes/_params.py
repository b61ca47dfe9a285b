"""Shared request-parameter parsing."""

from __future__ import annotations

import re

from service.errors import InvalidRequest
from service.schemas import ID_MAX_LEN, ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)


def parse_id_list(raw: str | None, max_len: int, loc: str = "exclude") -> list[str]:
    """``a,b,c`` -> ["a", "b", "c"]; blanks dropped; 422 for malformed ids or too many."""
    if not raw:
        return []
    ids = [p.strip() for p in raw.split(",")]
    ids = [p for p in ids if p]
    if len(ids) > max_len:
        raise InvalidRequest(
            f"query.{loc}: {len(ids)} ids, at most {max_len} allowed",
            [{"loc": ["query", loc], "msg": f"at most {max_len} ids", "type": "too_long"}],
        )
    for p in ids:
        if len(p) > ID_MAX_LEN or not _ID_RE.match(p):
            raise InvalidRequest(
                f"query.{loc}: malformed id {p[:64]!r} (1-{ID_MAX_LEN} printable characters)",
                [{"loc": ["query", loc], "msg": "malformed id", "type": "string_pattern_mismatch"}],
            )
    return ids
