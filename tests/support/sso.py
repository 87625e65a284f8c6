"""Single sign-on in the browser tests: the stand-in identity provider, a dashboard configured to
use it, and signing in through its form in real Chromium."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

import launch
from config import get_settings
from standins.oidc_standin import OidcStandin
from tests.conftest import running_dashboard

CLIENT_ID = "kolops-dashboard"
PROVIDER = "Stand-in IdP"
SIGN_IN = f"Sign in with {PROVIDER}"


@contextmanager
def sso_dashboard(
    db: str, monkeypatch: pytest.MonkeyPatch, log_path: Path, **settings: str
) -> Iterator[tuple[str, OidcStandin]]:
    """A stand-in provider and `streamlit run app.py` configured for it through the environment
    (OIDC_* plus `settings`), as the launcher would run it; yields (dashboard URL, provider)."""
    with OidcStandin(client_id=CLIENT_ID, client_secret=secrets.token_urlsafe(16)) as idp:
        env = {
            "OIDC_SERVER_METADATA_URL": idp.metadata_url,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": idp.client_secret,
            "OIDC_COOKIE_SECRET": secrets.token_urlsafe(32),
            "OIDC_PROVIDER_NAME": PROVIDER,
            **settings,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        try:
            with running_dashboard(log_path, {**os.environ, "DATABASE_URL": db}) as url:
                idp.redirect_uris.append(f"{url}/oauth2callback")
                try:
                    yield url, idp
                finally:
                    launch.secrets_file(int(urlsplit(url).port or 0)).unlink(missing_ok=True)
        finally:
            get_settings.cache_clear()


def sso_sign_in(page: Page, email: str, *, verified: bool = True) -> None:
    """From the dashboard's login page: the SSO button, then the provider's form as `email`."""
    page.get_by_role("button", name=SIGN_IN).click()
    expect(page.get_by_role("heading", name="Stand-in identity provider")).to_be_visible()
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("email verified").set_checked(verified)
    page.get_by_role("button", name="Sign in").click()
