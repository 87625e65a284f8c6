"""Free text typed by people or read from outside sources, checked in one place.

PostgreSQL text cannot hold the NUL character, so a NUL would surface as a database error deep in
a transaction; it is refused up front with a clear error instead. Every other character (HTML,
SQL fragments, control characters) is kept exactly: it is data, stored through bound parameters
and shown as text.
"""

from __future__ import annotations

from services.errors import ErrorCode, ServiceError


def free_text(
    value: object, *, what: str, max_len: int, missing: ErrorCode = ErrorCode.INVALID_INPUT
) -> str:
    """`value` stripped; refused when missing or blank (with `missing`), too long, or with NUL."""
    if not isinstance(value, str) or not value.strip():
        raise ServiceError(missing, f"a non-empty {what} is required")
    text = value.strip()
    if "\x00" in text:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"the {what} contains a NUL character")
    if len(text) > max_len:
        raise ServiceError(
            ErrorCode.INVALID_INPUT, f"the {what} has more than {max_len} characters"
        )
    return text
