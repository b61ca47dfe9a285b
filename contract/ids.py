"""What a user or item id is, for every process and every door: served, ingested, trained on.

An id is 1 to ``ID_MAX_LEN`` characters of any text but control characters (``\\x00-\\x1f``,
``\\x7f``): the ids of real datasets (numbers, hashes, names with spaces) are valid as they are,
so a user known to a dataset can be fed new interactions under the same id.
"""

from __future__ import annotations

import re

ID_MAX_LEN = 256
ID_FORBIDDEN = r"\x00-\x1f\x7f"
"""Control characters (a regex class body)."""
ID_PATTERN = rf"^[^{ID_FORBIDDEN}]+$"
"""JSON Schema / pydantic pattern of an id (length checked separately)."""
ID_RULE = f"1-{ID_MAX_LEN} characters, no control characters"

_ID_RE = re.compile(rf"[^{ID_FORBIDDEN}]{{1,{ID_MAX_LEN}}}")


def is_valid_id(value: object) -> bool:
    """True for a str of 1-ID_MAX_LEN characters without control characters (fullmatch: a
    trailing newline is refused too)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None
