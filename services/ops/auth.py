"""Dashboard accounts (the ops team, not market users): argon2 password hashes, roles, logins.

python -m services.ops.auth create-admin NAME     create the first admin (password from stdin)

Every action re-checks its caller with `require(session, principal, role, action)` inside the
action's own transaction, against the account's row as it is now (and the caller's dashboard
session, when there is one): a deactivated account, a lowered role or an ended session stops
the next action, not the next login.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import get_settings
from db.engine import transaction
from db.models import DashboardAccount, LoginThrottle
from services import inputs
from services.errors import ErrorCode, ServiceError
from services.ops import audit, identity, sessions
from services.vocabulary import Result, Role, SessionEnd, ThrottleScope

_hasher = PasswordHasher()
USERNAME_RE = re.compile(r"^[a-z0-9_.-]{2,64}$")
MIN_PASSWORD = 10
_ROLES = frozenset(Role)
# Every refused login says exactly this, whatever the reason (unknown, inactive, wrong password).
BAD_CREDENTIALS = "wrong username or password"
# What a password login is told when LOCAL_LOGIN is off (single sign-on only).
PASSWORD_LOGIN_OFF = "Password login is off here: sign in with single sign-on."
# What every refused single sign-on is told, whatever the reason (unknown, unverified, inactive).
SSO_REFUSED = "This sign-in opens no dashboard account. Ask an admin to link your email to one."
SSO_ENDED = "Your sign-in has ended: sign in again."
# The codes `require` refuses with (it audits the refusal itself).
CALLER_REFUSED = frozenset({ErrorCode.NOT_AUTHENTICATED, ErrorCode.PERMISSION_DENIED})


@dataclass(frozen=True)
class Principal:
    """Who is acting on the dashboard: the account, its role when it was last checked, and the
    dashboard session it acts through (None on the command line)."""

    username: str
    role: Role
    session_id: int | None = None
    # Signed in through single sign-on (its session is named by the sign-in, not a cookie).
    via_sso: bool = False
    # This run opened the session: a single sign-on seen for the first time (not part of who
    # the principal is).
    signed_in_now: bool = field(default=False, compare=False)

    def can(self, role: Role) -> bool:
        """Whether this principal holds at least `role`; a role outside the vocabulary holds
        nothing. Only for what to offer on a page: the services decide with `require`."""
        return self.role in _ROLES and Role(self.role).includes(role)


def _refuse(
    principal: Principal | None, action: str, code: ErrorCode, detail: str, msg: str
) -> NoReturn:
    # Its own transaction: the refusal stays on record though the action's work rolls back.
    audit.record(principal, action=action, result=Result.REFUSED, detail=detail)
    raise ServiceError(code, msg)


def _as_it_is_now(session: Session, principal: Principal, lock: bool) -> Principal | str:
    """The principal with its account's current role, or why it may no longer act."""
    stmt = select(DashboardAccount.id, DashboardAccount.role, DashboardAccount.active).where(
        DashboardAccount.username == principal.username
    )
    account = session.execute(stmt.with_for_update(read=True) if lock else stmt).first()
    if account is None or not account.active:
        return "account unknown or inactive"
    if principal.session_id is not None and not sessions.is_live(
        session, principal.session_id, account.id
    ):
        return "session ended or expired"
    return replace(principal, role=Role(account.role))


def require(session: Session, principal: Principal | None, role: Role, action: str) -> Principal:
    """The caller as the database knows it now, inside the action's transaction `session`.

    Refused (and the refusal audited) unless the account exists and is active, its session (if
    any) is live, and its CURRENT role includes `role`. The account row is share-locked until the
    action commits, so a deactivation or role change waits for actions already under way and
    every later action sees it. Returns the principal with its current role."""
    if principal is None:
        _refuse(None, action, ErrorCode.NOT_AUTHENTICATED, "not logged in", "log in first")
    current = _as_it_is_now(session, principal, lock=True)
    if isinstance(current, str):
        message = (
            "your session has ended: log in again"
            if current.startswith("session")
            else "your account is not active: log in again"
        )
        _refuse(principal, action, ErrorCode.NOT_AUTHENTICATED, current, message)
    if not current.can(role):
        _refuse(
            current,
            action,
            ErrorCode.PERMISSION_DENIED,
            f"needs role {role}, has {current.role}",
            f"{action} needs the {role} role",
        )
    return current


def check(principal: Principal | None, role: Role, action: str) -> Principal:
    """`require` in a transaction of its own, for a step that checks its caller before it starts
    (a preview, a bulk step); each change the step then makes requires again in its own."""
    with transaction() as session:
        return require(session, principal, role, action)


def still_valid(principal: Principal) -> bool:
    """Whether `principal` may still use the dashboard (its account active, its session live),
    for a page part that refreshes on its own without the navigation's check."""
    with transaction() as session:
        return not isinstance(_as_it_is_now(session, principal, lock=False), str)


def _account_audit(
    session: Session, actor: Principal | None, action: str, username: str, **after: Any
) -> None:
    audit.record(
        actor,
        action=action,
        target_type="dashboard_account",
        target_id=username,
        result=Result.OK,
        after=after,
        session=session,
    )


def create_account(
    username: str, password: str, role: Role, *, actor: Principal | None = None
) -> int:
    """A new account; `actor` None only from the command line (the first admin, the demo)."""
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise ServiceError(ErrorCode.INVALID_INPUT, "username: 2-64 of a-z 0-9 _ . -")
    if role not in _ROLES:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"role must be one of {', '.join(Role)}")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"password needs {MIN_PASSWORD}+ characters")
    if "\x00" in password:
        raise ServiceError(ErrorCode.INVALID_INPUT, "the password contains a NUL character")
    with transaction() as session:
        if actor is not None:
            actor = require(session, actor, Role.ADMIN, "create_account")
        if session.scalar(select(DashboardAccount.id).where(DashboardAccount.username == username)):
            raise ServiceError(ErrorCode.INVALID_INPUT, f"account {username!r} exists")
        account_id = session.scalar(
            insert(DashboardAccount)
            .values(username=username, password_hash=_hasher.hash(password), role=role)
            .returning(DashboardAccount.id)
        )
        _account_audit(session, actor, "create_account", username, role=role)
    assert account_id is not None
    return account_id


def _change_account(
    actor: Principal, username: str, action: str, reason: SessionEnd, **values: Any
) -> None:
    """Change one account and end its sessions, with the audit row, in one transaction."""
    with transaction() as session:
        who = require(session, actor, Role.ADMIN, action)
        changed = session.execute(
            update(DashboardAccount)
            .where(DashboardAccount.username == username)
            .values(**values)
            .returning(DashboardAccount.id)
        ).scalar_one_or_none()
        if changed is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no account {username!r}")
        ended = sessions.end(session, reason, account_id=changed)
        _account_audit(session, who, action, username, sessions_ended=len(ended), **values)


def set_active(username: str, active: bool, *, actor: Principal) -> None:
    """Deactivate (ending every session of the account) or reactivate an account."""
    _change_account(actor, username, "set_account_active", SessionEnd.DEACTIVATED, active=active)


def set_role(username: str, role: Role, *, actor: Principal) -> None:
    """Give an account another role; its sessions end, so it logs in again under the new one."""
    if role not in _ROLES:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"role must be one of {', '.join(Role)}")
    _change_account(actor, username, "set_account_role", SessionEnd.ROLE_CHANGED, role=role)


def list_accounts(*, actor: Principal) -> list[dict[str, object]]:
    """Every account with its live sessions and its failed-login state."""
    with transaction() as session:
        require(session, actor, Role.ADMIN, "list_accounts")
        live = sessions.open_sessions(session)
        throttles = {
            t.subject: t
            for t in session.scalars(
                select(LoginThrottle).where(LoginThrottle.scope == ThrottleScope.ACCOUNT)
            )
        }
        rows = session.scalars(select(DashboardAccount).order_by(DashboardAccount.username))
        out: list[dict[str, object]] = []
        for a in rows:
            t = throttles.get(a.username)
            out.append(
                {
                    "username": a.username,
                    "role": a.role,
                    "active": a.active,
                    "sso_email": a.sso_email,
                    "last_login_at": a.last_login_at,
                    "sessions": sum(1 for s in live if s["username"] == a.username),
                    "failed_logins": t.failures if t else 0,
                    "locked_until": t.locked_until if t else None,
                }
            )
        return out


def set_sso_email(username: str, email: str | None, *, actor: Principal) -> None:
    """Link an account to the verified email single sign-on vouches for (None or blank: unlink
    it), audited in the same transaction."""
    value = None if email is None or not str(email).strip() else inputs.email(email, what="email")
    with transaction() as session:
        who = require(session, actor, Role.ADMIN, "set_sso_email")
        before = session.execute(
            select(DashboardAccount.id, DashboardAccount.sso_email)
            .where(DashboardAccount.username == username)
            .with_for_update()
        ).first()
        if before is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no account {username!r}")
        if before.sso_email == value:
            return
        try:
            # The unique index on lower(sso_email) decides, so two admins racing for one email
            # cannot both win; the savepoint keeps this transaction usable for the message.
            with session.begin_nested():
                session.execute(
                    update(DashboardAccount)
                    .where(DashboardAccount.id == before.id)
                    .values(sso_email=value)
                )
        except IntegrityError:
            raise ServiceError(
                ErrorCode.INVALID_INPUT, "that email already signs in as another account"
            ) from None
        # Sessions end when an email is changed or removed (one the account no longer has may
        # have opened them); linking a first email leaves the password sessions alone.
        ended = (
            sessions.end(session, SessionEnd.SSO_CHANGED, account_id=before.id)
            if before.sso_email is not None
            else []
        )
        audit.record(
            who,
            action="set_sso_email",
            target_type="dashboard_account",
            target_id=username,
            result=Result.OK,
            before={"sso_email": before.sso_email},
            after={"sso_email": value, "sessions_ended": len(ended)},
            session=session,
        )


@dataclass(frozen=True)
class SsoRefused:
    """A single sign-on that opens nothing, with what to tell the visitor; `ended` when its
    session had ended (they may sign in again), not when no account takes it."""

    message: str
    ended: bool = False


def sign_in_sso(claims: Mapping[str, object], client_address: str | None) -> Principal | SsoRefused:
    """The principal a single sign-on (Streamlit's `st.user` claims) stands for, its dashboard
    session opened on first sight; or a refusal, audited with the email and the reason.

    The session is named by the sign-in (identity.sign_in), so it has a local login's lifetime,
    idle timeout and revocation, and a copy of the identity cookie replayed after it ended opens
    nothing. Unknown, unverified and inactive are told the same."""
    settings = get_settings()
    found = identity.sign_in(claims, issuer=settings.oidc_issuer, client_id=settings.oidc_client_id)
    email = claims.get("email")
    shown_email = inputs.for_the_record(email, max_len=64) if email else None
    client_address = inputs.for_the_record(client_address, max_len=64) if client_address else None
    with transaction() as session:
        reason = found if isinstance(found, str) else None
        if isinstance(found, identity.Identity):
            # Existence first, then liveness: a session once opened stays (ended or not), so
            # another tab's sign-in committing between the two reads cannot look like an end.
            if sessions.ever_opened(session, found.key):
                live = sessions.find_live(session, found.key)
                if live is not None:
                    session_id, username, role = live
                    return Principal(username, Role(role), session_id, via_sso=True)
                audit.record(
                    None,
                    action="sso_login",
                    target_type="sso_email",
                    target_id=shown_email,
                    result=Result.REFUSED,
                    detail=f"sign-in ended (logged out, expired or revoked) from {client_address}",
                    session=session,
                )
                return SsoRefused(SSO_ENDED, ended=True)
            account = session.execute(
                select(
                    DashboardAccount.id,
                    DashboardAccount.username,
                    DashboardAccount.role,
                    DashboardAccount.active,
                )
                .where(func.lower(DashboardAccount.sso_email) == func.lower(found.email))
                # The lock its last_login_at update needs, taken now: tabs seeing one new
                # sign-in at once queue here instead of deadlocking on the session's insert.
                .with_for_update(key_share=True)
            ).first()
            if account is None:
                reason = "no account has this email"
            elif not account.active:
                reason = f"account {account.username!r} is inactive"
        if reason is not None:
            audit.record(
                None,
                action="sso_login",
                target_type="sso_email",
                target_id=shown_email,
                result=Result.REFUSED,
                detail=f"{reason}, from {client_address}",
                session=session,
            )
            return SsoRefused(SSO_REFUSED)
        assert isinstance(found, identity.Identity) and account is not None
        session_id = sessions.open_once(session, account.id, found.key, client_address)
        if session_id is None:  # another tab of the same sign-in opened it a moment ago
            live = sessions.find_live(session, found.key)
            if live is None:
                return SsoRefused(SSO_ENDED, ended=True)
            return Principal(live[1], Role(live[2]), live[0], via_sso=True)
        session.execute(
            update(DashboardAccount)
            .where(DashboardAccount.id == account.id)
            .values(last_login_at=func.now())
        )
        principal = Principal(
            account.username, Role(account.role), session_id, via_sso=True, signed_in_now=True
        )
        audit.record(
            principal,
            action="sso_login",
            target_type="sso_email",
            target_id=shown_email,
            result=Result.OK,
            detail=client_address,
            session=session,
        )
        return principal


def log_out_sso(claims: Mapping[str, object]) -> None:
    """End the dashboard session of a single sign-on (its identity cookie then opens nothing,
    wherever a copy of it is)."""
    settings = get_settings()
    found = identity.sign_in(claims, issuer=settings.oidc_issuer, client_id=settings.oidc_client_id)
    if isinstance(found, identity.Identity):
        log_out(found.key)


def list_sessions(*, actor: Principal) -> list[dict[str, Any]]:
    with transaction() as session:
        require(session, actor, Role.ADMIN, "list_sessions")
        return sessions.open_sessions(session)


def end_session(session_id: int, *, actor: Principal) -> bool:
    """End one session (an admin's action, audited); False when it had already ended."""
    with transaction() as session:
        who = require(session, actor, Role.ADMIN, "end_session")
        ended = bool(sessions.end(session, SessionEnd.ENDED_BY_ADMIN, id=session_id))
        audit.record(
            who,
            action="end_session",
            target_type="dashboard_session",
            target_id=str(session_id),
            result=Result.OK if ended else Result.ALREADY_DONE,
            session=session,
        )
    return ended


def unlock(scope: ThrottleScope, subject: str, *, actor: Principal) -> bool:
    """Forget the failed logins of a username or an address (an admin's action, audited)."""
    with transaction() as session:
        who = require(session, actor, Role.ADMIN, "unlock_login")
        cleared = session.execute(
            delete(LoginThrottle)
            .where(LoginThrottle.scope == scope, LoginThrottle.subject == subject)
            .returning(LoginThrottle.failures)
        ).first()
        audit.record(
            who,
            action="unlock_login",
            target_type=f"login_{scope.lower()}",
            target_id=subject[:64],
            result=Result.OK if cleared else Result.ALREADY_DONE,
            before={"failures": cleared.failures} if cleared else None,
            session=session,
        )
    return cleared is not None


# -- logging in -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottlePolicy:
    """How failed logins slow down the next ones: `free` failures cost nothing, then each waits
    twice as long as the one before (1 s, 2 s, 4 s...), and `max_failures` lock the username or
    address for `lock`. A run of failures is forgotten after `lock` without one."""

    free: int
    max_failures: int
    lock: dt.timedelta

    @classmethod
    def from_settings(cls) -> ThrottlePolicy:
        s = get_settings()
        return cls(
            s.login_free_failures,
            max(s.login_max_failures, s.login_free_failures),
            dt.timedelta(minutes=s.login_lock_minutes),
        )

    def _current(self, failures: int, last_failure_at: dt.datetime, now: dt.datetime) -> int:
        return 0 if now - last_failure_at > self.lock else failures

    def wait(
        self,
        failures: int,
        last_failure_at: dt.datetime,
        locked_until: dt.datetime | None,
        now: dt.datetime,
    ) -> dt.timedelta:
        """How long the next login must wait (zero: it may go ahead)."""
        if locked_until is not None and locked_until > now:
            return locked_until - now
        failures = self._current(failures, last_failure_at, now)
        if failures < self.free:
            return dt.timedelta(0)
        ready = last_failure_at + dt.timedelta(seconds=2 ** (failures - self.free))
        return max(dt.timedelta(0), ready - now)

    def after_failure(
        self, failures: int, last_failure_at: dt.datetime | None, now: dt.datetime
    ) -> tuple[int, dt.datetime | None]:
        """(failures, locked_until) once one more login has failed."""
        counted = 1 + (self._current(failures, last_failure_at, now) if last_failure_at else 0)
        return counted, (now + self.lock if counted >= self.max_failures else None)


@cache
def _dummy_hash() -> str:
    # Unknown and inactive usernames are verified against this, so they cost what a wrong
    # password costs and time tells nothing about which usernames exist.
    return _hasher.hash("no account has this password")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _subjects(username: str, client_address: str | None) -> list[tuple[ThrottleScope, str]]:
    subjects = [(ThrottleScope.ACCOUNT, username[:64])]
    if client_address:
        subjects.append((ThrottleScope.ADDRESS, client_address[:64]))
    return subjects


def _throttled(
    session: Session,
    subjects: list[tuple[ThrottleScope, str]],
    policy: ThrottlePolicy,
    now: dt.datetime,
) -> dt.timedelta:
    waits = [
        policy.wait(t.failures, t.last_failure_at, t.locked_until, now)
        for scope, subject in subjects
        if (t := session.get(LoginThrottle, (scope, subject), with_for_update=True)) is not None
    ]
    return max(waits, default=dt.timedelta(0))


def _count_failure(
    session: Session,
    subjects: list[tuple[ThrottleScope, str]],
    policy: ThrottlePolicy,
    now: dt.datetime,
) -> None:
    for scope, subject in subjects:
        t = session.get(LoginThrottle, (scope, subject), with_for_update=True)
        failures, locked = policy.after_failure(
            t.failures if t else 0, t.last_failure_at if t else None, now
        )
        session.execute(
            pg_insert(LoginThrottle)
            .values(
                scope=scope,
                subject=subject,
                failures=failures,
                last_failure_at=now,
                locked_until=locked,
            )
            .on_conflict_do_update(
                index_elements=["scope", "subject"],
                set_={"failures": failures, "last_failure_at": now, "locked_until": locked},
            )
        )


def log_in(username: str, password: str, client_address: str | None) -> tuple[Principal, str]:
    """Check the credentials and open a session: (principal, session token for the cookie).

    Unknown usernames, inactive accounts and wrong passwords cost the same argon2 verification
    and get the same answer. Failures are counted per username and per client address; past the
    policy's free failures the next attempt must wait, and a run of them locks for a while.
    Every refusal is audited."""
    username = username.strip() if isinstance(username, str) else ""
    password = password if isinstance(password, str) else ""
    # PostgreSQL text cannot hold NUL: such a name is looked up as no one, and audited escaped.
    username = inputs.for_the_record(username)
    client_address = inputs.for_the_record(client_address, max_len=64) if client_address else None
    target = username[:64]
    if not get_settings().local_login:
        audit.record(
            None,
            action="login",
            target_type="dashboard_account",
            target_id=target,
            result=Result.REFUSED,
            detail=f"password login is off (LOCAL_LOGIN=false), from {client_address}",
        )
        raise ServiceError(ErrorCode.PERMISSION_DENIED, PASSWORD_LOGIN_OFF)
    policy = ThrottlePolicy.from_settings()
    subjects = _subjects(username, client_address)
    with transaction() as session:
        now: dt.datetime = session.scalar(select(func.now()))  # type: ignore[assignment]
        # The throttle rows stay locked through the verification: parallel guesses at one
        # username or from one address queue here, and every one of them is counted.
        wait = _throttled(session, subjects, policy, now)
        principal = token = None
        if not wait:
            account = session.scalar(
                select(DashboardAccount).where(DashboardAccount.username == username)
            )
            usable = account is not None and account.active
            ok = _verify(account.password_hash if usable else _dummy_hash(), password) and usable
            if ok:
                assert account is not None
                account.last_login_at = func.now()
                session.execute(
                    delete(LoginThrottle).where(
                        LoginThrottle.scope == ThrottleScope.ACCOUNT,
                        LoginThrottle.subject == target,
                    )
                )
                session_id, token = sessions.open_session(session, account.id, client_address)
                principal = Principal(account.username, Role(account.role), session_id)
                audit.record(
                    principal,
                    action="login",
                    result=Result.OK,
                    detail=client_address,
                    session=session,
                )
            else:
                _count_failure(session, subjects, policy, now)
        if principal is None:
            audit.record(
                None,
                action="login",
                target_type="dashboard_account",
                target_id=target,
                result=Result.REFUSED,
                detail=(
                    f"throttled for {wait.total_seconds():.0f}s from {client_address}"
                    if wait
                    else f"bad credentials from {client_address}"
                ),
                session=session,
            )
    if principal is None or token is None:
        if wait:
            raise ServiceError(
                ErrorCode.LOGIN_THROTTLED,
                f"too many failed logins: try again in {max(1, round(wait.total_seconds()))} s",
            )
        raise ServiceError(ErrorCode.NOT_AUTHENTICATED, BAD_CREDENTIALS)
    return principal, token


def resolve(token: str | None) -> Principal | None:
    """The principal of a live session token (the login cookie); None when it opens nothing."""
    if not token:
        return None
    with transaction() as session:
        found = sessions.find_live(session, token)
    if found is None:
        return None
    session_id, username, role = found
    return Principal(username, Role(role), session_id)


def log_out(token: str | None) -> None:
    """End the session `token` names (the cookie then opens nothing, wherever a copy of it is)."""
    if not token:
        return
    with transaction() as session:
        for username in sessions.end(
            session, SessionEnd.LOGOUT, token_sha256=sessions.token_hash(token)
        ):
            audit.record(
                None,
                action="logout",
                target_type="dashboard_account",
                target_id=username,
                result=Result.OK,
                session=session,
            )


def _main() -> int:
    parser = argparse.ArgumentParser(description="dashboard accounts")
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create-admin", help="create an admin account")
    create.add_argument("username")
    args = parser.parse_args()
    if args.cmd == "create-admin":
        password = (
            getpass.getpass("password: ")
            if sys.stdin.isatty()
            else sys.stdin.readline().rstrip("\n")
        )
        try:
            create_account(args.username, password, Role.ADMIN)
        except ServiceError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"admin {args.username!r} created")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
