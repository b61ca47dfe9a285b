"""What a user or item id is, for every process and every door: served, ingested, trained on.

An id is 1 to ``ID_MAX_LEN`` characters of any text but control characters (``\\x00-\\x1f``,
``\\x7f``) and lone surrogates (a JSON ``"\\ud800"`` escape: not text, UTF-8 cannot store it):
the ids of real datasets (numbers, hashes, names with spaces) are valid as they are, so a user
known to a dataset can be fed new interactions under the same id.
"""

from __future__ import annotations

import re

ID_MAX_LEN = 256
ID_FORBIDDEN = r"\x00-\x1f\x7f"
"""Control characters (a regex class body)."""
ID_PATTERN = rf"^[^{ID_FORBIDDEN}]+$"
"""JSON Schema / pydantic pattern of an id (length checked separately)."""
ID_RULE = f"1-{ID_MAX_LEN} characters, no control characters, no lone surrogates"

# ID_PATTERN plus the surrogates (U+D800-U+DFFF), which pydantic's (Rust) regex cannot name: its
# strict str refuses them before the pattern; JSON Schema readers meet them only as escapes.
_ID_RE = re.compile(rf"[^{ID_FORBIDDEN}\ud800-\udfff]{{1,{ID_MAX_LEN}}}")


def is_valid_id(value: object) -> bool:
    """True for a str of 1-ID_MAX_LEN characters without control characters (fullmatch: a
    trailing newline is refused too)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None
