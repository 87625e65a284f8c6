"""Dashboard login and roles, through Streamlit's AppTest and the services."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from services.errors import ErrorCode, ServiceError
from services.ops import audit, auth
from services.ops.auth import Principal
from tests.support.pages import dashboard_app


def _login(at: AppTest, username: str, password: str) -> AppTest:
    at.run()
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click()
    return at.run()


def test_login_shows_overview_and_wrong_password_is_refused_and_audited(db: str) -> None:
    auth.create_account("olga", "correct horse battery", "operator")
    at = _login(dashboard_app(), "olga", "wrong password!")
    assert [e.value for e in at.error] == ["wrong username or password"]
    assert "principal" not in at.session_state
    refused = audit.recent(action="login")
    assert refused[0]["result"] == "REFUSED" and refused[0]["target"] == "dashboard_account:olga"

    at = _login(dashboard_app(), "olga", "correct horse battery")
    assert not at.exception
    assert at.session_state["principal"] == Principal("olga", "operator")
    assert "Market health" in [t.value for t in at.title]
    assert [m.label for m in at.metric][:3] == ["Open", "Due", "Overdue (past grace)"]


def test_roles_are_checked_by_the_services_and_refusals_logged(db: str) -> None:
    viewer = Principal("vic", "viewer")
    with pytest.raises(ServiceError) as err:
        auth.require(viewer, "operator", "cancel_market")
    assert err.value.code == ErrorCode.PERMISSION_DENIED
    with pytest.raises(ServiceError) as err:
        auth.require(None, "viewer", "view")
    assert err.value.code == ErrorCode.NOT_AUTHENTICATED
    assert [r["result"] for r in audit.recent()] == ["REFUSED", "REFUSED"]
    assert auth.require(Principal("ada", "admin"), "operator", "x").role == "admin"


@pytest.mark.parametrize(
    ("username", "password", "role"),
    [("A B", "long enough pw", "viewer"), ("ok", "short", "viewer"), ("ok", "long enough", "god")],
)
def test_bad_account_input_is_refused(db: str, username: str, password: str, role: str) -> None:
    with pytest.raises(ServiceError) as err:
        auth.create_account(username, password, role)
    assert err.value.code == ErrorCode.INVALID_INPUT


def test_inactive_account_cannot_log_in(db: str) -> None:
    auth.create_account("ada", "admin password 1", "admin")
    auth.create_account("bob", "bob password 1", "viewer")
    auth.set_active("bob", False, actor=Principal("ada", "admin"))
    with pytest.raises(ServiceError):
        auth.authenticate("bob", "bob password 1")
    assert auth.authenticate("ada", "admin password 1").role == "admin"


def test_a_nul_character_is_refused_plainly_everywhere_text_enters(db: str) -> None:
    """PostgreSQL text cannot hold NUL: each entry point refuses it with a clear error."""
    from services.inputs import free_text

    auth.create_account("nina", "nina password 1", "viewer")
    with pytest.raises(ServiceError) as err:
        auth.authenticate("ni\x00na", "nina password 1")
    assert err.value.code == ErrorCode.NOT_AUTHENTICATED
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
    assert auth.authenticate("root-admin", "a long admin password").role == "admin"
    again = run("root-admin", "a long admin password")
    assert again.returncode == 1 and "exists" in again.stderr
    short = run("other-admin", "short")
    assert short.returncode == 1 and "characters" in short.stderr
