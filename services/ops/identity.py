"""What a single sign-on identity vouches for (pure): the claims of an OpenID Connect ID token, as
Streamlit keeps them in `st.user` after `st.login`, turned into one sign-in or a refusal.

Only an ID token of the configured issuer, for this dashboard's client id, with a verified email,
signs anyone in. A sign-in is named by the claims that make it unique (issuer, subject, the
login's nonce and issue time): Streamlit's identity cookie carries the same claims for as long as
it lives, so the name finds the same dashboard session on every run, and a copy of the cookie
replayed after that session ended finds the ended session, never a new one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from services.inputs import MAX_EMAIL


@dataclass(frozen=True)
class Identity:
    """One sign-in: the verified email it vouches for and the key naming it."""

    email: str
    key: str


def _text(claims: Mapping[str, object], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def _audience_has(aud: object, client_id: str) -> bool:
    if isinstance(aud, str):
        return aud == client_id
    return isinstance(aud, list) and client_id in aud


def sign_in(claims: Mapping[str, object], *, issuer: str, client_id: str) -> Identity | str:
    """The sign-in `claims` stand for, or why they sign no one in (for the audit log)."""
    if claims.get("is_logged_in") is not True:
        return "not signed in"
    if _text(claims, "iss") != issuer:
        return f"issuer {str(claims.get('iss'))[:80]!r} is not the configured one"
    if not _audience_has(claims.get("aud"), client_id):
        return "the ID token is not for this dashboard's client id"
    sub, nonce, iat = _text(claims, "sub"), _text(claims, "nonce"), claims.get("iat")
    if sub is None or nonce is None or not isinstance(iat, int) or isinstance(iat, bool):
        return "the ID token lacks its subject, nonce or issue time"
    email = _text(claims, "email")
    if email is None or len(email) > MAX_EMAIL or "\x00" in email:
        return "the ID token has no usable email"
    # Only a boolean true: a provider that says "true" as text, or nothing, has not verified it.
    if claims.get("email_verified") is not True:
        return "email not verified"
    return Identity(email, json.dumps([issuer, sub, nonce, iat]))
