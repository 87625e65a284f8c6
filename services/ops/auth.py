"""Dashboard accounts (the ops team, not market users): argon2 password hashes and roles.

python -m services.ops.auth create-admin NAME     create the first admin (password from stdin)
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, insert, select, update

from db.engine import transaction
from db.models import DashboardAccount
from services.errors import ErrorCode, ServiceError
from services.ops import audit
from services.vocabulary import Result, Role

_hasher = PasswordHasher()
USERNAME_RE = re.compile(r"^[a-z0-9_.-]{2,64}$")
MIN_PASSWORD = 10
_ROLES = frozenset(Role)


@dataclass(frozen=True)
class Principal:
    """Who is acting on the dashboard."""

    username: str
    role: Role

    def can(self, role: Role) -> bool:
        """Whether this principal holds at least `role`; a role outside the vocabulary holds
        nothing."""
        return self.role in _ROLES and Role(self.role).includes(role)


def require(principal: Principal | None, role: Role, action: str) -> Principal:
    """Refuse (and audit the refusal) unless `principal` holds at least `role`."""
    if principal is None:
        audit.record(None, action=action, result=Result.REFUSED, detail="not logged in")
        raise ServiceError(ErrorCode.NOT_AUTHENTICATED, "log in first")
    if not principal.can(role):
        audit.record(
            principal,
            action=action,
            result=Result.REFUSED,
            detail=f"needs role {role}, has {principal.role}",
        )
        raise ServiceError(ErrorCode.PERMISSION_DENIED, f"{action} needs the {role} role")
    return principal


def create_account(
    username: str, password: str, role: Role, *, actor: Principal | None = None
) -> int:
    if actor is not None:
        require(actor, Role.ADMIN, "create_account")
    if not USERNAME_RE.match(username):
        raise ServiceError(ErrorCode.INVALID_INPUT, "username: 2-64 of a-z 0-9 _ . -")
    if role not in _ROLES:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"role must be one of {', '.join(Role)}")
    if len(password) < MIN_PASSWORD:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"password needs {MIN_PASSWORD}+ characters")
    with transaction() as session:
        if session.scalar(select(DashboardAccount.id).where(DashboardAccount.username == username)):
            raise ServiceError(ErrorCode.INVALID_INPUT, f"account {username!r} exists")
        account_id = session.scalar(
            insert(DashboardAccount)
            .values(username=username, password_hash=_hasher.hash(password), role=role)
            .returning(DashboardAccount.id)
        )
    audit.record(
        actor,
        action="create_account",
        target_type="dashboard_account",
        target_id=username,
        result=Result.OK,
        after={"role": role},
    )
    assert account_id is not None
    return account_id


def set_active(username: str, active: bool, *, actor: Principal) -> None:
    require(actor, Role.ADMIN, "set_account_active")
    with transaction() as session:
        session.execute(
            update(DashboardAccount)
            .where(DashboardAccount.username == username)
            .values(active=active)
        )
    audit.record(
        actor,
        action="set_account_active",
        target_type="dashboard_account",
        target_id=username,
        result=Result.OK,
        after={"active": active},
    )


def list_accounts(*, actor: Principal) -> list[dict[str, object]]:
    require(actor, Role.ADMIN, "list_accounts")
    with transaction() as session:
        rows = session.execute(select(DashboardAccount).order_by(DashboardAccount.username))
        return [
            {
                "username": a.username,
                "role": a.role,
                "active": a.active,
                "last_login_at": a.last_login_at,
            }
            for a in rows.scalars()
        ]


def authenticate(username: str, password: str) -> Principal:
    """The principal for these credentials; a refusal is audited and says nothing more."""
    principal = None
    # PostgreSQL text cannot hold NUL: such a name matches no account.
    if "\x00" not in username:
        with transaction() as session:
            account = session.scalar(
                select(DashboardAccount).where(DashboardAccount.username == username)
            )
            if account is not None and account.active and _verify(account.password_hash, password):
                account.last_login_at = func.now()
                principal = Principal(account.username, Role(account.role))
    if principal is None:
        audit.record(
            None,
            action="login",
            target_type="dashboard_account",
            target_id=username.replace("\x00", "\\0")[:64],
            result=Result.REFUSED,
            detail="bad credentials",
        )
        raise ServiceError(ErrorCode.NOT_AUTHENTICATED, "wrong username or password")
    audit.record(principal, action="login", result=Result.OK)
    return principal


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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
