"""Where a login may send the browser afterwards: a path on this site, nowhere else."""

from __future__ import annotations

import pytest

from dashboard.routes import local_target


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("/markets?market=42", "/markets?market=42"),
        ("/", "/"),
        ("/ledger?login_error=NOT_AUTHENTICATED&x=1", "/ledger?x=1"),
        ("https://evil.example/", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("markets", "/"),
        ("/a\r\nSet-Cookie: x=1", "/"),
        (None, "/"),
        ("", "/"),
    ],
)
def test_local_target(value: object, target: str) -> None:
    assert local_target(value) == target
