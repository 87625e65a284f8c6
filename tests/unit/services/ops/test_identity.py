"""What an OIDC identity signs in (services.ops.identity): a decision table over the claims, and
the key that names one sign-in."""

from __future__ import annotations

import json

import pytest

from services.ops.identity import Identity, sign_in

ISSUER = "https://idp.example.com"
CLIENT = "kolops"
GOOD: dict[str, object] = {
    "is_logged_in": True,
    "iss": ISSUER,
    "aud": CLIENT,
    "sub": "u-1",
    "nonce": "n-1",
    "iat": 1_800_000_000,
    "email": "Olga@Example.com",
    "email_verified": True,
}


def _without(name: str) -> dict[str, object]:
    return {k: v for k, v in GOOD.items() if k != name}


@pytest.mark.parametrize(
    ("claims", "refusal"),
    [
        ({}, "not signed in"),
        (GOOD | {"is_logged_in": False}, "not signed in"),
        (GOOD | {"is_logged_in": "yes"}, "not signed in"),
        (_without("iss"), "issuer"),
        (GOOD | {"iss": ISSUER + "/"}, "issuer"),
        (GOOD | {"iss": "https://evil.example.com"}, "issuer"),
        (_without("aud"), "client id"),
        (GOOD | {"aud": "other"}, "client id"),
        (GOOD | {"aud": ["other"]}, "client id"),
        (GOOD | {"aud": {"kolops": 1}}, "client id"),
        (_without("sub"), "subject, nonce or issue time"),
        (GOOD | {"sub": ""}, "subject, nonce or issue time"),
        (_without("nonce"), "subject, nonce or issue time"),
        (_without("iat"), "subject, nonce or issue time"),
        (GOOD | {"iat": "1800000000"}, "subject, nonce or issue time"),
        (GOOD | {"iat": True}, "subject, nonce or issue time"),
        (_without("email"), "no usable email"),
        (GOOD | {"email": ""}, "no usable email"),
        (GOOD | {"email": 42}, "no usable email"),
        (GOOD | {"email": "a@" + "b" * 300}, "no usable email"),
        (GOOD | {"email": "a\x00@b.c"}, "no usable email"),
        (_without("email_verified"), "email not verified"),
        (GOOD | {"email_verified": False}, "email not verified"),
        (GOOD | {"email_verified": "true"}, "email not verified"),
        (GOOD | {"email_verified": 1}, "email not verified"),
    ],
)
def test_claims_that_sign_no_one_in_say_why(claims: dict[str, object], refusal: str) -> None:
    result = sign_in(claims, issuer=ISSUER, client_id=CLIENT)
    assert isinstance(result, str) and refusal in result


@pytest.mark.parametrize("aud", [CLIENT, [CLIENT], ["other", CLIENT]])
def test_verified_claims_of_the_issuer_for_this_client_sign_in(aud: object) -> None:
    result = sign_in(GOOD | {"aud": aud}, issuer=ISSUER, client_id=CLIENT)
    assert result == Identity("Olga@Example.com", json.dumps([ISSUER, "u-1", "n-1", 1_800_000_000]))


def test_the_key_names_one_sign_in_and_nothing_else_changes_it() -> None:
    def key(**over: object) -> str:
        result = sign_in(GOOD | over, issuer=ISSUER, client_id=CLIENT)
        assert isinstance(result, Identity)
        return result.key

    base = key()
    # Each login has its own nonce and issue time; each person their subject.
    assert len({base, key(nonce="n-2"), key(iat=1_800_000_001), key(sub="u-2")}) == 4
    # Claims outside the key (a renamed profile, a refreshed expiry) keep it.
    assert key(name="Olga B.", exp=1, picture="x") == base
