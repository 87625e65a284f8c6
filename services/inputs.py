"""Free text typed by people or read from outside sources, checked in one place.

PostgreSQL text cannot hold the NUL character, so a NUL would surface as a database error deep in
a transaction; it is refused up front with a clear error instead. Every other character (HTML,
SQL fragments, control characters) is kept exactly: it is data, stored through bound parameters
and shown as text.
"""

from __future__ import annotations

import re

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


def for_the_record(value: object, *, max_len: int | None = None) -> str:
    """Untrusted text kept as evidence (who tried to log in, from where) instead of refused: a NUL,
    which PostgreSQL text cannot hold, escaped as a backslash and 0, then cut to `max_len` (in that
    order: the escape makes the text longer)."""
    return str(value).replace("\x00", "\\0")[:max_len]


# -- single sign-on (issue 15) --------------------------------------------------------------------

# Longest email accepted (RFC 5321's path limit).
MAX_EMAIL = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def email(value: object, *, what: str) -> str:
    """An email address typed by a person: the free-text check, then one '@' between two
    non-blank parts (whether the mailbox exists is the identity provider's business)."""
    text = free_text(value, what=what, max_len=MAX_EMAIL)
    if not _EMAIL.fullmatch(text):
        raise ServiceError(ErrorCode.INVALID_INPUT, f"the {what} is not an email address")
    return text
