"""Accounts (admins): the dashboard's accounts; create one, deactivate or reactivate one.

The navigation offers this page to admins only, and every call re-checks the role."""

from __future__ import annotations

import streamlit as st

from pages.ui import principal, show_refusal
from services.errors import ServiceError
from services.ops import auth
from services.vocabulary import Role

who = principal()
st.title("Dashboard accounts")
flash = st.session_state.pop("accounts_flash", None)
if flash:
    st.success(flash)

try:
    accounts = auth.list_accounts(actor=who)
except ServiceError as exc:
    show_refusal(exc)
    st.stop()
st.dataframe(accounts, hide_index=True, width="stretch")

st.subheader("Create an account")
with st.form("create_account", clear_on_submit=True):
    username = st.text_input("Username (a-z 0-9 _ . -)")
    role = st.selectbox("Role", [r.value for r in Role])
    password = st.text_input(f"Password ({auth.MIN_PASSWORD}+ characters)", type="password")
    create = st.form_submit_button("Create")
if create:
    try:
        auth.create_account(username.strip(), password, role, actor=who)
    except ServiceError as exc:
        show_refusal(exc)
    else:
        st.session_state["accounts_flash"] = f"Account {username.strip()} ({role}) created."
        st.rerun()

st.subheader("Deactivate or reactivate")
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
    active = by_name[name]["active"]
    if st.button("Deactivate" if active else "Reactivate", key="accounts_toggle"):
        try:
            auth.set_active(name, not active, actor=who)
        except ServiceError as exc:
            show_refusal(exc)
        else:
            st.session_state["accounts_flash"] = (
                f"Account {name} {'deactivated' if active else 'reactivated'}."
            )
            st.rerun()
    st.caption("You cannot deactivate your own account here: another admin must.")
