"""Accounts (admins): the dashboard's accounts with their live sessions and failed logins; create
one, change its role, deactivate or reactivate it, link it to a single sign-on email, end a
session, unlock a locked login.

The navigation offers this page to admins only, and every call re-checks the role."""

from __future__ import annotations

import streamlit as st

from config import get_settings
from pages.ui import principal, show_refusal
from services.errors import ServiceError
from services.ops import auth
from services.vocabulary import Role, ThrottleScope

who = principal()
st.title("Dashboard accounts")
flash = st.session_state.pop("accounts_flash", None)
if flash:
    st.success(flash)


def _done(message: str) -> None:
    st.session_state["accounts_flash"] = message
    st.rerun()


try:
    accounts = auth.list_accounts(actor=who)
    sessions = auth.list_sessions(actor=who)
except ServiceError as exc:
    show_refusal(exc)
    st.stop()
st.dataframe(
    accounts,
    hide_index=True,
    width="stretch",
    column_config={
        "sso_email": st.column_config.TextColumn("SSO email"),
        "sessions": st.column_config.NumberColumn("live sessions"),
        "failed_logins": st.column_config.NumberColumn("failed logins"),
        "locked_until": st.column_config.DatetimeColumn("locked until", format="iso8601"),
    },
)

st.subheader("Create an account")
with st.form("create_account", clear_on_submit=True):
    username = st.text_input("Username (a-z 0-9 _ . -)")
    role = st.selectbox("Role", [r.value for r in Role])
    password = st.text_input(
        f"Password ({auth.MIN_PASSWORD}+ characters)", type="password", autocomplete="new-password"
    )
    create = st.form_submit_button("Create")
if create:
    try:
        auth.create_account(username.strip(), password, role, actor=who)
    except ServiceError as exc:
        show_refusal(exc)
    else:
        _done(f"Account {username.strip()} ({role}) created.")

st.subheader("Deactivate, reactivate or change the role")
others = [a for a in accounts if a["username"] != who.username]
if not others:
    st.caption("No other accounts.")
else:
    by_name = {a["username"]: a for a in others}
    name = st.selectbox(
        "Account",
        list(by_name),
        format_func=lambda n: (
            f"{n} ({by_name[n]['role']}, {'active' if by_name[n]['active'] else 'inactive'})"
        ),
        key="accounts_pick",
    )
    picked = by_name[name]
    active = bool(picked["active"])
    cols = st.columns([1, 1, 2])
    if cols[0].button("Deactivate" if active else "Reactivate", key="accounts_toggle"):
        try:
            auth.set_active(name, not active, actor=who)
        except ServiceError as exc:
            show_refusal(exc)
        else:
            _done(f"Account {name} {'deactivated' if active else 'reactivated'}.")
    roles = [r.value for r in Role]
    new_role = cols[2].selectbox(
        "New role", roles, index=roles.index(str(picked["role"])), key="accounts_role"
    )
    if cols[1].button("Change role", key="accounts_set_role", disabled=new_role == picked["role"]):
        try:
            auth.set_role(name, Role(new_role), actor=who)
        except ServiceError as exc:
            show_refusal(exc)
        else:
            _done(f"Account {name} is now {new_role}; its sessions ended.")
    throttled = picked["locked_until"] is not None or bool(picked["failed_logins"])
    if throttled and st.button(f"Unlock {name}'s login", key="accounts_unlock"):
        try:
            auth.unlock(ThrottleScope.ACCOUNT, name, actor=who)
        except ServiceError as exc:
            show_refusal(exc)
        else:
            _done(f"Failed logins of {name} forgotten.")
    st.caption(
        "You cannot deactivate your own account here: another admin must. Deactivating an"
        " account or changing its role ends its sessions at once."
    )

st.subheader("Single sign-on")
st.caption(
    "The verified email the identity provider vouches for that signs in as the account (any"
    " case). Changing or removing it ends the account's sessions."
    + ("" if get_settings().sso_configured else " Single sign-on is not configured here yet.")
)
with st.form("sso_email"):
    sso_name = st.selectbox("Account", [a["username"] for a in accounts], key="accounts_sso_pick")
    sso_email = st.text_input("SSO email (empty: none)", key="accounts_sso_email")
    link = st.form_submit_button("Set SSO email")
if link:
    try:
        auth.set_sso_email(sso_name, sso_email, actor=who)
    except ServiceError as exc:
        show_refusal(exc)
    else:
        shown = sso_email.strip() or "no SSO email"
        _done(f"Account {sso_name} now has {shown}.")

st.subheader("Live sessions")
if not sessions:
    st.caption("No live sessions.")
else:
    st.dataframe(sessions, hide_index=True, width="stretch")
    by_id = {int(s["id"]): s for s in sessions}
    pick = st.selectbox(
        "Session",
        list(by_id),
        format_func=lambda i: (
            f"#{i} {by_id[i]['username']} from {by_id[i]['client_address'] or '?'}"
            f" since {by_id[i]['created_at']:%Y-%m-%d %H:%M} UTC"
        ),
        key="accounts_session",
    )
    if st.button("End this session", key="accounts_end_session"):
        try:
            auth.end_session(pick, actor=who)
        except ServiceError as exc:
            show_refusal(exc)
        else:
            _done(f"Session #{pick} ended.")
