"""Small helpers shared by the dashboard pages (presentation, and the session check of parts that
refresh on their own; data only through services)."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

import streamlit as st

from config import PROJECT_ROOT
from services.errors import ServiceError
from services.ops import auth
from services.ops.auth import Principal
from services.vocabulary import MarketStatus, Result

P = ParamSpec("P")
# Set when a refreshing part found its session ended and ran the whole page again (the login form
# then draws itself once more a moment later: see dashboard.shell.login_page).
ENDED_BY_REFRESH = "ended_by_refresh"


def principal() -> Principal:
    """The logged-in principal. Pages run only from the navigation dashboard.shell builds after
    resolving the session, which sets it on every run; anything else stops here, showing nothing."""
    who = st.session_state.get("principal")
    if isinstance(who, Principal):
        return who
    st.stop()


def refreshing(every: float | dt.timedelta) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """`st.fragment(run_every=every)` for a part of a page that refreshes on its own: each run
    first checks the session is still live (a fragment's own run skips the navigation's check),
    and once it has ended the whole page runs again, which shows the login form."""

    def wrap(body: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(body)
        def checked(*args: P.args, **kwargs: P.kwargs) -> None:
            if not auth.still_valid(principal()):
                st.session_state["principal"] = None
                st.session_state[ENDED_BY_REFRESH] = True
                st.rerun(scope="app")
            body(*args, **kwargs)

        return st.fragment(run_every=every)(checked)

    return wrap


def page_file(name: str) -> str:
    """The absolute path of page `name` (pages/NAME.py), as st.Page and st.page_link take it
    (the dashboard's script is not in this folder's parent)."""
    return str(PROJECT_ROOT / "pages" / f"{name}.py")


def age(now: dt.datetime, then: dt.datetime | None) -> str:
    """'42s ago', '5m ago', '3h ago', '2d ago' or 'never'."""
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


# Every ASCII punctuation character can be backslash-escaped in Markdown; escaping them all keeps
# links, images, emphasis, Streamlit's :color[...] and :emoji: directives and LaTeX inert.
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def size(n: int) -> str:
    """A number of bytes for people: 1.2 GB, 340 MB, 12 kB."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def md_text(value: object) -> str:
    """Text from the database (KOL names, titles, reasons) made inert for st.markdown, headers,
    labels and messages: shown exactly as typed, on one line, never interpreted."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _market_state(row: Mapping[str, Any]) -> tuple[str, str]:
    """(label, colour) of a market's state, bad states first."""
    if row["status"] == MarketStatus.OPEN:
        if row["needs_attention"]:
            return "NEEDS ATTENTION", "red"
        if row["held"]:
            return "ON HOLD", "violet"
        if row["overdue"]:
            return "OVERDUE", "red"
        if row["due"]:
            return "DUE", "orange"
        return MarketStatus.OPEN.value, "green"
    if row["status"] == MarketStatus.RESOLVED:
        return f"{MarketStatus.RESOLVED} {row['outcome']}", "blue"
    return f"{MarketStatus.CANCELLED} {row['cancel_reason']}", "gray"


def market_state(row: Mapping[str, Any]) -> str:
    """A market's state for a table cell: 'OVERDUE', 'RESOLVED YES'... (colour it with
    `state_css`). `row` has status, outcome, cancel_reason, needs_attention, due and overdue."""
    return _market_state(row)[0]


def market_badge(row: Mapping[str, Any]) -> str:
    """A market's state as a coloured Markdown badge."""
    label, colour = _market_state(row)
    return f":{colour}-badge[{md_text(label)}]"


_BAD = frozenset({"NEEDS ATTENTION", "OVERDUE", Result.REFUSED, Result.FAILED})
_WARN = frozenset({"DUE", "ON HOLD", Result.STATE_CHANGED, Result.PROPOSED})


def state_css(label: object) -> str:
    """Cell style for a state or result label in a styled table (`Styler.map`): red for bad
    states, amber for ones to watch, grey for cancelled markets."""
    text = str(label)
    if text in _BAD:
        return "background-color: #fde7e7; color: #a61b1b; font-weight: 600"
    if text in _WARN:
        return "background-color: #fff3e0; color: #8a4b00; font-weight: 600"
    if text.startswith(MarketStatus.CANCELLED):
        return "color: #6b6b6b"
    return ""


def show_refusal(exc: ServiceError) -> None:
    """A service's refusal, shown plainly with its code."""
    st.error(f"{exc.message}  \n`{exc.code.value}`")


def page_offset(key: str, page_size: int) -> int:
    """The offset of the page the pager `key` shows (read before the list is fetched)."""
    return (int(st.session_state.get(key, 1)) - 1) * page_size


def pager(key: str, total: int, page_size: int) -> None:
    """A page picker under a list of `total` rows (drawn only when there is more than a page)."""
    pages = max(1, -(-total // page_size))
    if st.session_state.get(key, 1) > pages:
        st.session_state[key] = pages
    if pages > 1:
        st.number_input(
            f"Page (of {pages}, {total} rows)", min_value=1, max_value=pages, step=1, key=key
        )
