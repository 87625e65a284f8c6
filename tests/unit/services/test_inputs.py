"""The email check (services.inputs.email) an admin's SSO email goes through, and the text kept
for the record of a refused login (services.inputs.for_the_record)."""

from __future__ import annotations

import pytest

from services.errors import ErrorCode, ServiceError
from services.inputs import MAX_EMAIL, email, for_the_record


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


@pytest.mark.parametrize(
    ("raw", "max_len", "kept"),
    [
        ("alice", None, "alice"),
        ("al\x00ice", None, "al\\0ice"),
        ("a" * 70, 64, "a" * 64),
        # Escaped first, then cut: a NUL at the limit never leaves a text longer than the column.
        ("a" * 63 + "\x00", 64, "a" * 63 + "\\"),
        ("<script>' OR 1=1", None, "<script>' OR 1=1"),
    ],
)
def test_text_for_the_record_holds_no_nul_and_fits_its_column(
    raw: str, max_len: int | None, kept: str
) -> None:
    shown = for_the_record(raw, max_len=max_len)
    assert shown == kept
    assert "\x00" not in shown
    assert max_len is None or len(shown) <= max_len
