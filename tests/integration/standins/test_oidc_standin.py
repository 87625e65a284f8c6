"""The stand-in identity provider speaks OIDC and checks what a real one checks: the client
secret, a code used once for the redirect URI it was issued to, PKCE; its ID tokens verify
against its JWKS."""

from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

import launch
from config import PROJECT_ROOT
from standins.oidc_standin import OidcStandin

REDIRECT = "http://127.0.0.1:8501/oauth2callback"
VERIFIER = "a-verifier-of-enough-length-0123456789-abcdefghij"
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")


@pytest.fixture()
def idp() -> Iterator[OidcStandin]:
    with OidcStandin(client_id="c1", client_secret="s1", redirect_uris=[REDIRECT]) as standin:
        yield standin


def _authorize(idp: OidcStandin, **over: str) -> dict[str, str]:
    return {
        "client_id": "c1",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email profile",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": CHALLENGE.decode(),
        "code_challenge_method": "S256",
        "email": "olga@example.com",
        "email_verified": "true",
    } | over


def _code(idp: OidcStandin, **over: str) -> str:
    answer = httpx.post(f"{idp.issuer}/authorize", data=_authorize(idp, **over))
    assert answer.status_code == 302, answer.text
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == REDIRECT
    query = parse_qs(target.query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def _token(idp: OidcStandin, code: str, **over: str) -> httpx.Response:
    secret = over.pop("secret", "s1")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    } | over
    return httpx.post(f"{idp.issuer}/token", data=form, auth=("c1", secret))


def test_a_code_becomes_a_signed_id_token_once(idp: OidcStandin) -> None:
    meta = httpx.get(idp.metadata_url).json()
    assert meta["issuer"] == idp.issuer and meta["code_challenge_methods_supported"] == ["S256"]
    code = _code(idp)
    answer = _token(idp, code)
    assert answer.status_code == 200, answer.text
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    token = jwt.decode(answer.json()["id_token"], keys, algorithms=["RS256"])
    claims = token.claims
    assert token.header["alg"] == "RS256"
    assert (claims["iss"], claims["aud"], claims["nonce"]) == (idp.issuer, "c1", "n-1")
    assert (claims["email"], claims["email_verified"]) == ("olga@example.com", True)
    assert claims["exp"] > claims["iat"]
    # A code works once.
    assert _token(idp, code).json() == {"error": "invalid_grant"}


def test_an_unverified_email_is_said_to_be_unverified(idp: OidcStandin) -> None:
    answer = _token(idp, _code(idp, email_verified=""))
    keys = KeySet.import_key_set(httpx.get(f"{idp.issuer}/jwks").json())
    assert jwt.decode(answer.json()["id_token"], keys).claims["email_verified"] is False


@pytest.mark.parametrize(
    ("over", "status", "error"),
    [
        ({"secret": "wrong"}, 401, "invalid_client"),
        ({"redirect_uri": "http://127.0.0.1:9/oauth2callback"}, 400, "invalid_grant"),
        ({"code_verifier": "another-verifier-of-enough-length-0123456789"}, 400, "invalid_grant"),
        ({"code_verifier": ""}, 400, "invalid_grant"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
def test_the_token_endpoint_refuses_what_a_provider_must(
    idp: OidcStandin, over: dict[str, str], status: int, error: str
) -> None:
    answer = _token(idp, _code(idp), **over)
    assert (answer.status_code, answer.json()["error"]) == (status, error)


@pytest.mark.parametrize(
    "over",
    [
        {"client_id": "other"},
        {"redirect_uri": "http://evil.example.com/oauth2callback"},
        {"code_challenge_method": "plain"},
        {"scope": "email"},
    ],
)
def test_the_authorize_endpoint_refuses_an_unregistered_client_or_redirect(
    idp: OidcStandin, over: dict[str, str]
) -> None:
    assert httpx.get(f"{idp.issuer}/authorize", params=_authorize(idp, **over)).status_code == 400
    assert httpx.post(f"{idp.issuer}/authorize", data=_authorize(idp, **over)).status_code == 400


def test_the_demo_runs_it_from_the_command_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins.oidc_standin", "--port", str(port),
         "--client-id", "c1", "--client-secret", "s1", "--redirect-uri", REDIRECT],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/.well-known/openid-configuration"
        launch.wait_http(url, alive=proc)
        assert httpx.get(url).json()["issuer"] == f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
