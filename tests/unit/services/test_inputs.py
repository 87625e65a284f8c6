"""The email check (services.inputs.email) an admin's SSO email goes through."""

from __future__ import annotations

import pytest

from services.errors import ErrorCode, ServiceError
from services.inputs import MAX_EMAIL, email


@pytest.mark.parametrize(
    ("raw", "kept"),
    [("olga@example.com", "olga@example.com"), ("  Olga@Example.COM\n", "Olga@Example.COM")],
)
def test_an_email_is_kept_as_typed_but_stripped(raw: str, kept: str) -> None:
    assert email(raw, what="email") == kept


@pytest.mark.parametrize(
    "raw",
    [
        None,
        7,
        "",
        "   ",
        "olga",
        "@example.com",
        "olga@",
        "a@b@c",
        "a b@c",
        "a@b\x00",
        "a@" + "b" * MAX_EMAIL,
    ],
)
def test_anything_else_is_refused_plainly(raw: object) -> None:
    with pytest.raises(ServiceError) as err:
        email(raw, what="email")
    assert err.value.code == ErrorCode.INVALID_INPUT and "email" in err.value.message
