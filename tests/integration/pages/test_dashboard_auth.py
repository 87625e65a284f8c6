"""Dashboard logins, sessions and roles through the services, on the real database (the browser
side is in test_browser_sessions.py)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text

from config import get_settings
from db.engine import transaction
from services.errors import ErrorCode, ServiceError
from services.ops import audit, auth, operator
from services.ops.auth import Principal
from services.vocabulary import Role, ThrottleScope
from tests.support.pages import market_row, overdue_market_with_bets

PASSWORD = "correct horse battery"


def _code(call: Callable[[], object]) -> ErrorCode:
    with pytest.raises(ServiceError) as err:
        call()
    return err.value.code


def test_login_opens_a_session_and_a_wrong_password_is_refused_and_audited(db: str) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    assert _code(lambda: auth.log_in("olga", "wrong password!", "10.0.0.1")) == (
        ErrorCode.NOT_AUTHENTICATED
    )
    refused = audit.recent(action="login")
    assert refused[0]["result"] == "REFUSED" and refused[0]["target"] == "dashboard_account:olga"

    who, token = auth.log_in("olga", PASSWORD, "10.0.0.1")
    assert (who.username, who.role) == ("olga", "operator") and who.session_id
    assert auth.resolve(token) == who
    assert auth.resolve(token + "x") is None and auth.resolve("") is None
    with transaction() as s:
        stored = s.execute(
            text("SELECT token_sha256, client_address FROM dashboard_sessions")
        ).one()
    assert token.encode() not in stored.token_sha256 and stored.client_address == "10.0.0.1"
    auth.log_out(token)
    assert auth.resolve(token) is None


def test_every_action_checks_the_account_as_it_is_now(db: str) -> None:
    """Defect: a principal was trusted as it was at login; a deactivated operator's open session
    kept cancelling, and a role change applied only after logout."""
    auth.create_account("ada", PASSWORD, "admin")
    auth.create_account("olga", PASSWORD, "operator")
    admin, _ = auth.log_in("ada", PASSWORD, None)
    olga, token = auth.log_in("olga", PASSWORD, None)
    s = overdue_market_with_bets(db)

    auth.set_role("olga", Role.VIEWER, actor=admin)
    assert auth.resolve(token) is None  # the role change ended her session
    lowered = Principal("olga", Role.OPERATOR)  # what a stale copy of her principal claims
    assert _code(
        lambda: operator.cancel_and_refund(lowered, s.market_id, "x", expected_status="OPEN")
    ) == (ErrorCode.PERMISSION_DENIED)

    auth.set_role("olga", Role.OPERATOR, actor=admin)
    auth.set_active("olga", False, actor=admin)
    assert _code(
        lambda: operator.cancel_and_refund(olga, s.market_id, "x", expected_status="OPEN")
    ) == (ErrorCode.NOT_AUTHENTICATED)
    without_session = Principal("olga", Role.OPERATOR)
    assert _code(
        lambda: operator.cancel_and_refund(
            without_session, s.market_id, "x", expected_status="OPEN"
        )
    ) == (ErrorCode.NOT_AUTHENTICATED)
    assert market_row(s.market_id)["status"] == "OPEN"
    refusals = [r["detail"] for r in audit.recent(action="cancel_and_refund")]
    assert refusals == [
        "account unknown or inactive",
        "account unknown or inactive",
        "needs role operator, has viewer",
    ]
    changes = [(r["action"], r["after"]) for r in audit.recent(username="ada") if r["after"]]
    assert changes[:3] == [
        ("set_account_active", {"active": False, "sessions_ended": 0}),
        ("set_account_role", {"role": "operator", "sessions_ended": 0}),
        ("set_account_role", {"role": "viewer", "sessions_ended": 1}),
    ]


def test_an_ended_session_cannot_act_though_the_account_is_fine(db: str) -> None:
    auth.create_account("ada", PASSWORD, "admin")
    auth.create_account("olga", PASSWORD, "operator")
    admin, _ = auth.log_in("ada", PASSWORD, None)
    olga, _ = auth.log_in("olga", PASSWORD, None)
    s = overdue_market_with_bets(db)
    assert olga.session_id is not None
    assert auth.end_session(olga.session_id, actor=admin) is True
    assert auth.end_session(olga.session_id, actor=admin) is False
    assert _code(
        lambda: operator.cancel_and_refund(olga, s.market_id, "x", expected_status="OPEN")
    ) == (ErrorCode.NOT_AUTHENTICATED)
    assert market_row(s.market_id)["status"] == "OPEN"
    assert [r["result"] for r in audit.recent(action="end_session")] == ["ALREADY_DONE", "OK"]


@pytest.mark.parametrize(
    ("column", "moved_by"),
    [("last_seen_at", "61 minutes"), ("expires_at", "12 hours 1 second")],
)
def test_sessions_end_when_idle_too_long_and_at_their_absolute_lifetime(
    db: str, column: str, moved_by: str
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    olga, token = auth.log_in("olga", PASSWORD, None)
    with transaction() as s:
        s.execute(
            text(f"UPDATE dashboard_sessions SET {column} = {column} - interval '{moved_by}'")
        )
    assert auth.resolve(token) is None
    assert _code(lambda: auth.list_sessions(actor=olga)) == ErrorCode.NOT_AUTHENTICATED


def test_roles_are_checked_by_the_services_and_refusals_logged(db: str) -> None:
    auth.create_account("vic", PASSWORD, "viewer")
    auth.create_account("ada", PASSWORD, "admin")
    viewer = Principal("vic", Role.VIEWER)
    assert _code(lambda: auth.list_accounts(actor=viewer)) == ErrorCode.PERMISSION_DENIED
    with transaction() as s:
        assert _code(lambda: auth.require(s, None, Role.VIEWER, "view")) == (
            ErrorCode.NOT_AUTHENTICATED
        )
        assert _code(lambda: auth.require(s, Principal("ghost", Role.ADMIN), Role.VIEWER, "x")) == (
            ErrorCode.NOT_AUTHENTICATED
        )
        assert auth.require(s, Principal("ada", Role.ADMIN), Role.OPERATOR, "x").role == "admin"
    assert [r["result"] for r in audit.recent() if r["action"] != "create_account"] == [
        "REFUSED"
    ] * 3


@pytest.mark.parametrize(
    ("username", "password", "role"),
    [
        ("A B", "long enough pw", "viewer"),
        ("ok", "short", "viewer"),
        ("ok", "long enough", "god"),
        ("ok", "long enough\x00", "viewer"),
    ],
)
def test_bad_account_input_is_refused(db: str, username: str, password: str, role: str) -> None:
    assert _code(lambda: auth.create_account(username, password, role)) == ErrorCode.INVALID_INPUT
    assert audit.count() == 0


def test_inactive_and_unknown_accounts_get_the_same_answer_as_a_wrong_password(db: str) -> None:
    auth.create_account("ada", "admin password 1", "admin")
    auth.create_account("bob", "bob password 1", "viewer")
    admin, _ = auth.log_in("ada", "admin password 1", None)
    auth.set_active("bob", False, actor=admin)
    messages = set()
    for name, password in [("bob", "bob password 1"), ("nobody", "x"), ("ada", "wrong one!")]:
        with pytest.raises(ServiceError) as err:
            auth.log_in(name, password, None)
        messages.add((err.value.code, err.value.message))
    assert messages == {(ErrorCode.NOT_AUTHENTICATED, auth.BAD_CREDENTIALS)}


def test_unknown_inactive_and_wrong_password_logins_take_as_long(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: an unknown or inactive username was answered without computing a password hash,
    measurably faster than a known one (a username oracle). Medians of interleaved attempts;
    the factor is generous because argon2 dominates (~tens of ms) and a database round trip
    is ~1 ms."""
    monkeypatch.setenv("LOGIN_FREE_FAILURES", "1000")
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "1000")
    get_settings.cache_clear()
    auth.create_account("ada", "admin password 1", "admin")
    auth.create_account("bob", "bob password 1", "viewer")
    admin, _ = auth.log_in("ada", "admin password 1", None)
    auth.set_active("bob", False, actor=admin)
    kinds = {"unknown": "nobody", "inactive": "bob", "wrong password": "ada"}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(9):
        for kind, name in kinds.items():
            started = time.perf_counter()
            with pytest.raises(ServiceError):
                auth.log_in(name, "not the password", None)
            times[kind].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) for k, v in times.items()}
    assert max(medians.values()) < 2 * min(medians.values()), medians
    get_settings.cache_clear()


def _backoff_passes() -> None:
    with transaction() as s:
        s.execute(text("UPDATE login_throttle SET last_failure_at = now() - interval '1 min'"))


def test_failed_logins_back_off_then_lock_per_username_and_an_admin_unlocks(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGIN_FREE_FAILURES", "2")
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "4")
    get_settings.cache_clear()
    auth.create_account("ada", "admin password 1", "admin")
    auth.create_account("olga", PASSWORD, "operator")
    for _ in range(2):  # free
        assert _code(lambda: auth.log_in("olga", "guess!", None)) == ErrorCode.NOT_AUTHENTICATED
    # Now even the right password waits (1 s, then 2 s...): a guesser learns nothing faster.
    assert _code(lambda: auth.log_in("olga", PASSWORD, None)) == ErrorCode.LOGIN_THROTTLED
    for _ in range(2):  # let the backoff pass and fail twice more: locked
        _backoff_passes()
        assert _code(lambda: auth.log_in("olga", "guess!", None)) == ErrorCode.NOT_AUTHENTICATED
    _backoff_passes()
    assert _code(lambda: auth.log_in("olga", PASSWORD, None)) == ErrorCode.LOGIN_THROTTLED
    admin, _ = auth.log_in("ada", "admin password 1", None)
    [row] = [a for a in auth.list_accounts(actor=admin) if a["username"] == "olga"]
    assert row["failed_logins"] == 4 and row["locked_until"] is not None
    assert auth.unlock(ThrottleScope.ACCOUNT, "olga", actor=admin) is True
    assert auth.log_in("olga", PASSWORD, None)[0].username == "olga"
    results = [r["detail"].split(" ")[0] for r in audit.recent(action="login") if r["detail"]]
    assert results.count("throttled") == 2
    assert [r["result"] for r in audit.recent(action="unlock_login")] == ["OK"]
    get_settings.cache_clear()


def test_one_address_trying_many_usernames_is_throttled_too(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGIN_FREE_FAILURES", "3")
    get_settings.cache_clear()
    auth.create_account("olga", PASSWORD, "operator")
    for name in ("a1", "a2", "a3"):
        assert _code(lambda n=name: auth.log_in(n, "guess", "203.0.113.9")) == (  # type: ignore[misc]
            ErrorCode.NOT_AUTHENTICATED
        )
    assert _code(lambda: auth.log_in("olga", PASSWORD, "203.0.113.9")) == (
        ErrorCode.LOGIN_THROTTLED
    )
    assert auth.log_in("olga", PASSWORD, "198.51.100.7")[0].username == "olga"
    get_settings.cache_clear()


def test_a_nul_character_is_refused_plainly_everywhere_text_enters(db: str) -> None:
    """PostgreSQL text cannot hold NUL: each entry point refuses it with a clear error."""
    from services.inputs import free_text

    auth.create_account("nina", "nina password 1", "viewer")
    assert _code(lambda: auth.log_in("ni\x00na", "nina password 1", "a\x00b")) == (
        ErrorCode.NOT_AUTHENTICATED
    )
    assert audit.recent(action="login")[0]["target"] == "dashboard_account:ni\\0na"
    with pytest.raises(ServiceError) as err:
        free_text("bad\x00reason", what="reason", max_len=100)
    assert err.value.code == ErrorCode.INVALID_INPUT and "NUL" in err.value.message
    with pytest.raises(ServiceError) as err:
        free_text("  ", what="reason", max_len=100, missing=ErrorCode.REASON_REQUIRED)
    assert err.value.code == ErrorCode.REASON_REQUIRED
    assert free_text(" <b>x</b>\x07 ", what="reason", max_len=100) == "<b>x</b>\x07"


def test_create_admin_command_line(db: str) -> None:
    import subprocess
    import sys

    from config import PROJECT_ROOT

    def run(name: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.ops.auth", "create-admin", name],
            cwd=PROJECT_ROOT,
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run("root-admin", "a long admin password")
    assert ok.returncode == 0 and "created" in ok.stdout
    assert auth.log_in("root-admin", "a long admin password", None)[0].role == "admin"
    again = run("root-admin", "a long admin password")
    assert again.returncode == 1 and "exists" in again.stderr
    short = run("other-admin", "short")
    assert short.returncode == 1 and "characters" in short.stderr
