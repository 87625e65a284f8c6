"""Single sign-on through the services, on the real database: the mapping of a verified email to
an account, the sessions it opens (the same guarantees as a password login), the admin's setting
of an account's SSO email, and LOCAL_LOGIN (the browser side is in test_browser_sso.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from config import get_settings
from db.engine import transaction
from pages.ui import page_file
from services.errors import ErrorCode, ServiceError
from services.ops import audit, auth
from services.ops.auth import Principal, SsoRefused
from tests.support.pages import dashboard_app

PASSWORD = "correct horse battery"
ISSUER = "http://127.0.0.1:9/idp"
CLIENT_ID = "kolops-dashboard"


@pytest.fixture(autouse=True)
def sso_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OIDC_SERVER_METADATA_URL", f"{ISSUER}/.well-known/openid-configuration")
    monkeypatch.setenv("OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("OIDC_CLIENT_SECRET", "s3cret")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _claims(email: str = "olga@example.com", nonce: str = "n-1", **over: object) -> dict:
    return {
        "is_logged_in": True,
        "provider": "default",
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": f"sub-{email}",
        "iat": 1_800_000_000,
        "exp": 1_800_003_600,
        "nonce": nonce,
        "email": email,
        "email_verified": True,
        "name": "Olga",
    } | over


def _code(call: Callable[[], object]) -> ErrorCode:
    with pytest.raises(ServiceError) as err:
        call()
    return err.value.code


def _admin() -> Principal:
    auth.create_account("ada", PASSWORD, "admin")
    return auth.log_in("ada", PASSWORD, None)[0]


def _olga(admin: Principal, email: str = "olga@example.com") -> None:
    auth.create_account("olga", PASSWORD, "operator")
    auth.set_sso_email("olga", email, actor=admin)


def test_a_sign_in_opens_one_session_that_every_later_run_finds(db: str) -> None:
    admin = _admin()
    _olga(admin)
    who = auth.sign_in_sso(_claims(), "10.0.0.7")
    assert isinstance(who, Principal) and (who.username, who.role, who.via_sso) == (
        "olga",
        "operator",
        True,
    )
    # Later runs (a reload, a new tab) find the same session; actions check it as usual.
    assert auth.sign_in_sso(_claims(), "10.0.0.7") == who
    assert auth.check(who, "operator", "probe").username == "olga"
    [row] = [s for s in auth.list_sessions(actor=admin) if s["username"] == "olga"]
    assert (row["id"], row["client_address"]) == (who.session_id, "10.0.0.7")
    [ok] = audit.recent(action="sso_login")
    assert (ok["result"], ok["username"], ok["target"]) == (
        "OK",
        "olga",
        "sso_email:olga@example.com",
    )


def test_an_ended_sign_in_stays_ended_and_a_new_sign_in_opens_a_new_session(db: str) -> None:
    admin = _admin()
    _olga(admin)
    who = auth.sign_in_sso(_claims(), None)
    assert isinstance(who, Principal)
    auth.log_out_sso(_claims())
    assert _code(lambda: auth.check(who, "viewer", "probe")) == ErrorCode.NOT_AUTHENTICATED
    # The same identity cookie, replayed: the ended session, never a new one.
    assert auth.sign_in_sso(_claims(), None) == SsoRefused(auth.SSO_ENDED, ended=True)
    assert not [s for s in auth.list_sessions(actor=admin) if s["username"] == "olga"]
    assert audit.recent(action="sso_login")[0]["result"] == "REFUSED"
    # Signing in again at the provider is a new login (a new nonce): a new session.
    again = auth.sign_in_sso(_claims(nonce="n-2"), None)
    assert isinstance(again, Principal) and again.session_id != who.session_id


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (lambda admin: auth.set_active("olga", False, actor=admin), "DEACTIVATED"),
        (lambda admin: auth.set_role("olga", "viewer", actor=admin), "ROLE_CHANGED"),
        (lambda admin: auth.set_sso_email("olga", "o2@example.com", actor=admin), "SSO_CHANGED"),
    ],
)
def test_deactivation_role_change_and_a_new_sso_email_end_the_sso_session(
    db: str, end: Callable[[Principal], None], reason: str
) -> None:
    admin = _admin()
    _olga(admin)
    who = auth.sign_in_sso(_claims(), None)
    assert isinstance(who, Principal)
    end(admin)
    assert _code(lambda: auth.check(who, "viewer", "probe")) == ErrorCode.NOT_AUTHENTICATED
    assert auth.sign_in_sso(_claims(), None) == SsoRefused(auth.SSO_ENDED, ended=True)
    with transaction() as s:
        assert (
            s.scalar(
                text("SELECT end_reason FROM dashboard_sessions WHERE id = :i"),
                {"i": who.session_id},
            )
            == reason
        )


def test_sso_sessions_expire_like_password_sessions(db: str) -> None:
    admin = _admin()
    _olga(admin)
    who = auth.sign_in_sso(_claims(), None)
    assert isinstance(who, Principal)
    with transaction() as s:
        s.execute(
            text(
                "UPDATE dashboard_sessions SET last_seen_at = now() - interval '1 day'"
                " WHERE id = :i"
            ),
            {"i": who.session_id},
        )
    assert auth.sign_in_sso(_claims(), None) == SsoRefused(auth.SSO_ENDED, ended=True)


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        (_claims(email="stranger@example.com"), "no account has this email"),
        (_claims(email_verified=False), "email not verified"),
        (_claims(email_verified="true"), "email not verified"),
        (_claims(iss="http://127.0.0.1:9/other"), "issuer"),
        (_claims(aud="someone-else"), "the ID token is not for this dashboard"),
        (_claims(nonce=None), "the ID token lacks its subject, nonce or issue time"),
        (_claims(email="vic@example.com"), "account 'vic' is inactive"),
    ],
)
def test_what_signs_no_one_in_is_told_the_same_and_audited_with_the_email_and_reason(
    db: str, claims: dict, detail: str
) -> None:
    admin = _admin()
    _olga(admin)
    auth.create_account("vic", PASSWORD, "viewer")
    auth.set_sso_email("vic", "vic@example.com", actor=admin)
    auth.set_active("vic", False, actor=admin)
    before = len(auth.list_sessions(actor=admin))
    assert auth.sign_in_sso(claims, "10.0.0.9") == SsoRefused(auth.SSO_REFUSED)
    [row] = audit.recent(action="sso_login")
    assert row["result"] == "REFUSED" and row["target"] == f"sso_email:{claims['email']}"
    assert row["detail"].startswith(detail) and "10.0.0.9" in row["detail"]
    assert len(auth.list_sessions(actor=admin)) == before


def test_an_admin_sets_an_accounts_sso_email_case_insensitively_unique_and_audited(
    db: str,
) -> None:
    admin = _admin()
    auth.create_account("olga", PASSWORD, "operator")
    auth.create_account("vic", PASSWORD, "viewer")
    auth.set_sso_email("olga", "  Olga@Example.com ", actor=admin)
    auth.set_sso_email("ada", "ada@example.com", actor=admin)
    # A first email leaves the account's (password) sessions alone: the admin is still in.
    assert auth.check(admin, "admin", "probe").username == "ada"
    row = audit.recent(action="set_sso_email")[-1]
    assert (row["result"], row["username"], row["target"]) == (
        "OK",
        "ada",
        "dashboard_account:olga",
    )
    # The email is the one thing that names the account to the provider: one account per email.
    with pytest.raises(ServiceError, match="already signs in as another account") as err:
        auth.set_sso_email("vic", "OLGA@example.COM", actor=admin)
    assert err.value.code == ErrorCode.INVALID_INPUT
    accounts = {a["username"]: a["sso_email"] for a in auth.list_accounts(actor=admin)}
    assert accounts == {"ada": "ada@example.com", "olga": "Olga@Example.com", "vic": None}
    # Unlinking: the email then signs in as no one.
    auth.set_sso_email("olga", "", actor=admin)
    assert auth.sign_in_sso(_claims(), None) == SsoRefused(auth.SSO_REFUSED)
    assert len(audit.recent(action="set_sso_email")) == 3


@pytest.mark.parametrize(
    "email",
    ["no-at-sign", "two@@example.com", "a b@example.com", "x\x00@example.com", "a@" + "b" * 300],
)
def test_a_bad_sso_email_is_refused_plainly_and_changes_nothing(db: str, email: str) -> None:
    admin = _admin()
    auth.create_account("olga", PASSWORD, "operator")
    assert _code(lambda: auth.set_sso_email("olga", email, actor=admin)) == ErrorCode.INVALID_INPUT
    assert {a["username"]: a["sso_email"] for a in auth.list_accounts(actor=admin)}["olga"] is None
    assert not audit.recent(action="set_sso_email")


def test_only_an_admin_sets_an_sso_email(db: str) -> None:
    admin = _admin()
    _olga(admin)
    olga = auth.log_in("olga", PASSWORD, None)[0]
    assert _code(lambda: auth.set_sso_email("olga", "me@example.com", actor=olga)) == (
        ErrorCode.PERMISSION_DENIED
    )
    assert _code(lambda: auth.set_sso_email("nobody", "n@example.com", actor=admin)) == (
        ErrorCode.NOT_FOUND
    )


def test_with_local_login_off_a_password_login_is_refused_and_audited(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    monkeypatch.setenv("LOCAL_LOGIN", "false")
    get_settings.cache_clear()
    assert _code(lambda: auth.log_in("olga", PASSWORD, "10.0.0.1")) == ErrorCode.PERMISSION_DENIED
    [row] = audit.recent(action="login")
    assert row["result"] == "REFUSED" and "LOCAL_LOGIN=false" in row["detail"]


def test_the_accounts_page_links_an_account_to_an_sso_email(db: str) -> None:
    admin = _admin()
    auth.create_account("olga", PASSWORD, "operator")
    at = dashboard_app(admin)
    at.run()
    at.switch_page(page_file("accounts")).run()
    assert not at.exception
    at.selectbox(key="accounts_sso_pick").set_value("olga")
    at.text_input(key="accounts_sso_email").input("not an email")
    at.button(key="FormSubmitter:sso_email-Set SSO email").click().run()
    assert [e.value.split("  \n")[0] for e in at.error] == ["the email is not an email address"]
    at.text_input(key="accounts_sso_email").input("olga@example.com")
    at.button(key="FormSubmitter:sso_email-Set SSO email").click().run()
    assert [s.value for s in at.success] == ["Account olga now has olga@example.com."]
    assert isinstance(auth.sign_in_sso(_claims(), None), Principal)


def test_two_tabs_seeing_a_new_sign_in_at_once_share_one_session(db: str) -> None:
    admin = _admin()
    _olga(admin)
    start = threading.Barrier(8)

    def first_sight() -> Principal | SsoRefused:
        start.wait()
        return auth.sign_in_sso(_claims(), None)

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: first_sight(), range(8)))
    assert all(isinstance(p, Principal) for p in seen)
    assert len({p.session_id for p in seen if isinstance(p, Principal)}) == 1
    assert len([s for s in auth.list_sessions(actor=admin) if s["username"] == "olga"]) == 1
    assert [r["result"] for r in audit.recent(action="sso_login")] == ["OK"]


def test_a_nul_in_the_claimed_email_is_refused_and_audited_escaped(db: str) -> None:
    """Defect: a 64-character email with a NUL grew to 65 once escaped for the audit row, past
    its column, and the refusal failed with a raw database error."""
    claims = _claims(email="\x00" + "a" * 51 + "@example.com")
    assert auth.sign_in_sso(claims, None) == SsoRefused(auth.SSO_REFUSED)
    [row] = audit.recent(action="sso_login")
    assert row["target"] == "sso_email:" + ("\\0" + "a" * 51 + "@example.com")[:64]
    assert row["detail"].startswith("the ID token has no usable email")
