"""Single sign-on's settings and the secrets file the launcher writes for Streamlit's `st.login`
(config.py stays the one reader of the environment; Streamlit reads [auth] from this file)."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import launch
from config import ConfigError, get_settings

METADATA = "https://idp.example.com/tenant/.well-known/openid-configuration"


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in (
        "OIDC_SERVER_METADATA_URL",
        "OIDC_CLIENT_ID",
        "OIDC_CLIENT_SECRET",
        "OIDC_COOKIE_SECRET",
        "DASHBOARD_URL",
        "LOCAL_LOGIN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(launch, "DASHBOARD_VAR", tmp_path / "dashboard")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _configure(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    env = {
        "OIDC_SERVER_METADATA_URL": METADATA,
        "OIDC_CLIENT_ID": "kolops",
        "OIDC_CLIENT_SECRET": 'se"cr\\et',
    } | extra
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def test_nothing_configured_means_no_sso_and_no_secrets_file(tmp_path: Path) -> None:
    s = get_settings()
    assert not s.sso_configured and s.local_login
    assert "--secrets.files" not in launch.dashboard_args(8501)
    assert not (tmp_path / "dashboard").exists()


@pytest.mark.parametrize(
    "given",
    [
        {"OIDC_SERVER_METADATA_URL": METADATA},
        {"OIDC_CLIENT_ID": "kolops", "OIDC_CLIENT_SECRET": "x"},
        {"OIDC_SERVER_METADATA_URL": METADATA, "OIDC_CLIENT_ID": "kolops"},
    ],
)
def test_a_partial_provider_configuration_is_refused(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str]
) -> None:
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="together"):
        get_settings()


@pytest.mark.parametrize(
    "url", ["idp.example.com/.well-known/openid-configuration", "https://idp.example.com/"]
)
def test_the_metadata_url_must_be_a_discovery_url(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    _configure(monkeypatch)
    monkeypatch.setenv("OIDC_SERVER_METADATA_URL", url)
    with pytest.raises(ConfigError, match="OIDC_SERVER_METADATA_URL"):
        get_settings()


def test_local_login_can_be_switched_off_only_beside_sso(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_LOGIN", "false")
    with pytest.raises(ConfigError, match="LOCAL_LOGIN"):
        get_settings()
    _configure(monkeypatch)
    assert not get_settings().local_login


def test_the_secrets_file_says_exactly_the_settings_and_only_its_owner_reads_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _configure(monkeypatch, OIDC_COOKIE_SECRET="cookie-secret-1")
    args = launch.dashboard_args(8599)
    path = Path(args[args.index("--secrets.files") + 1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {
        "auth": {
            "redirect_uri": "http://127.0.0.1:{port}/oauth2callback",  # Streamlit fills it in
            "cookie_secret": "cookie-secret-1",
            "client_id": "kolops",
            "client_secret": 'se"cr\\et',
            "server_metadata_url": METADATA,
        }
    }
    s = get_settings()
    assert s.oidc_issuer == "https://idp.example.com/tenant"
    assert 'se"cr' not in repr(s) and "cookie-secret-1" not in repr(s)


def test_the_public_url_names_the_redirect_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(monkeypatch, DASHBOARD_URL="https://ops.example.com/")
    assert get_settings().oidc_redirect_uri == "https://ops.example.com/oauth2callback"


def test_a_generated_cookie_secret_is_kept_across_restarts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _configure(monkeypatch)
    first = launch.cookie_secret(get_settings())
    assert len(first) >= 48 and launch.cookie_secret(get_settings()) == first
    kept = tmp_path / "dashboard" / "oidc-cookie-secret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert [p.name for p in kept.parent.iterdir()] == ["oidc-cookie-secret"]  # no leftovers


def test_a_setting_toml_cannot_hold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(monkeypatch, OIDC_CLIENT_SECRET="bad\x7fsecret")
    with pytest.raises(ConfigError, match="secrets file"):
        launch.dashboard_args(8599)


def test_the_demo_switch_names_the_stand_in_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in launch.demo_sso_env("demo-secret").items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    s = get_settings()
    assert s.sso_configured and s.oidc_issuer == f"http://127.0.0.1:{launch.OIDC_STANDIN_PORT}"
    assert (s.oidc_client_id, s.oidc_client_secret) == (launch.DEMO_OIDC_CLIENT, "demo-secret")
