"""Where a login may send the browser afterwards: a path on this site, nowhere else; and the
single sign-on route that remembers it across the identity provider's round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette

from config import get_settings
from dashboard.routes import AFTER_SSO, ROUTES, SSO_PATH, local_target

SITE = "http://dash.test"


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


@pytest.fixture(autouse=True)
def no_sso(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OIDC_SERVER_METADATA_URL", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _get(path: str, headers: dict[str, str]) -> httpx.Response:
    """A GET to the routes, served in-process (ASGI), without following redirects."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=Starlette(routes=ROUTES))
        async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def _configure_sso(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OIDC_SERVER_METADATA_URL", "http://idp.test/.well-known/openid-configuration"
    )
    monkeypatch.setenv("OIDC_CLIENT_ID", "kolops")
    monkeypatch.setenv("OIDC_CLIENT_SECRET", "secret")
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("referer", "remembered"),
    [
        (f"{SITE}/markets?market=42", "/markets?market=42"),
        (f"{SITE}/ledger?login_error=NOT_AUTHENTICATED", "/ledger"),
        ("http://evil.example/markets?market=42", "/"),  # another site's page: not a target
        (None, "/"),
    ],
)
def test_the_sso_route_remembers_the_page_it_was_pressed_on(
    monkeypatch: pytest.MonkeyPatch, referer: str | None, remembered: str
) -> None:
    _configure_sso(monkeypatch)
    response = _get(SSO_PATH, {"referer": referer} if referer else {})
    assert response.status_code == 303
    assert response.headers["location"] == "/?sso=1"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=600" in cookie
    assert unquote(response.cookies[AFTER_SSO]) == remembered


def test_without_sso_the_route_remembers_nothing() -> None:
    response = _get(SSO_PATH, {"referer": f"{SITE}/markets?market=42"})
    assert (response.status_code, response.headers["location"]) == (303, "/")
    assert AFTER_SSO not in response.cookies
