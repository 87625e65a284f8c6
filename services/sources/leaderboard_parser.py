"""Pure parsing of leaderboard rows: the raw strings read off the page become typed numbers.

A value that cannot be read is never guessed (and never becomes zero): the row is a `Reject`
carrying its raw text, the field and a reason code, so an analyst can see exactly what the page
showed. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import urlsplit

from services.errors import ErrorCode
from services.sources import kolscan_selectors as sel

SOL_QUANTUM = Decimal("0.000001")  # scraped_kols.sol_gain NUMERIC(24, 6)
USD_QUANTUM = Decimal("0.01")  # scraped_kols.usd_gain NUMERIC(24, 2)
MAX_ABS_GAIN = Decimal(10) ** 15  # far beyond any real gain: such a number is a misread
MAX_COUNT = 2**31 - 1  # wins/losses are INTEGER columns

_BASE58_WALLET = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
_X_HANDLE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
# Paths on x.com that are pages of the site, not profiles.
_X_RESERVED = frozenset({"intent", "share", "home", "i", "search", "hashtag", "explore", "status"})
_MINUS = "\u2212"
# No-break, thin and other odd spaces the site's formatter may emit.
_SPACES = re.compile(r"[\s\u00a0\u2007\u2009\u202f]+")
_NUMBER = r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_SOL = re.compile(rf"^(?P<sign>[+-])? ?{_NUMBER} ?(?P<suffix>[KM])? ?sol$", re.IGNORECASE)
_USD = re.compile(
    rf"^\( ?(?P<sign>[+-])? ?\$ ?(?P<sign2>[+-])? ?{_NUMBER} ?(?P<suffix>[KM])? ?\)$",
    re.IGNORECASE,
)
_RECORD = re.compile(r"^(?P<wins>\d{1,3}(?:,\d{3})+|\d+) ?/ ?(?P<losses>\d{1,3}(?:,\d{3})+|\d+)$")
_SUFFIX = {"": Decimal(1), "K": Decimal(1000), "M": Decimal(1_000_000)}


@dataclass(frozen=True)
class ParsedRow:
    rank: int
    username: str
    wallet: str
    x_handle: str | None
    wins: int
    losses: int
    sol_gain: Decimal
    usd_gain: Decimal


@dataclass(frozen=True)
class Reject:
    position: int
    raw: dict[str, Any]
    field: str | None
    code: ErrorCode
    reason: str


class ParseError(ValueError):
    """One field of a row could not be read."""

    def __init__(self, field: str, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.code = code
        self.reason = reason


def clean_text(raw: str | None) -> str:
    """Collapse every run of whitespace (nbsp included) to one space, turn U+2212 into '-'."""
    if raw is None:
        return ""
    return _SPACES.sub(" ", raw).replace(_MINUS, "-").strip()


def _required(field: str, raw: str | None) -> str:
    text = clean_text(raw)
    if not text:
        raise ParseError(field, ErrorCode.PARSE_MISSING_FIELD, f"{field} is missing")
    return text


def _number(field: str, pattern: re.Pattern[str], text: str) -> tuple[re.Match[str], Decimal]:
    """Match `text` against `pattern`; return the match and the unsigned value, suffix applied."""
    match = pattern.match(text)
    if match is None:
        raise ParseError(field, ErrorCode.PARSE_BAD_NUMBER, f"{field}: cannot read {text!r}")
    value = Decimal(match["num"].replace(",", "")) * _SUFFIX[(match["suffix"] or "").upper()]
    if value >= MAX_ABS_GAIN:
        raise ParseError(field, ErrorCode.PARSE_BAD_NUMBER, f"{field}: {text!r} is out of range")
    return match, value


def parse_sol(raw: str | None) -> Decimal:
    """`+1,234.5 Sol`, `−3.2K Sol`, `0 Sol` -> Decimal (signed)."""
    match, value = _number("sol_gain", _SOL, _required("sol_gain", raw))
    value = value.quantize(SOL_QUANTUM, rounding=ROUND_HALF_EVEN)
    return -value if match["sign"] == "-" else value


def parse_usd(raw: str | None, *, sol_gain: Decimal) -> Decimal:
    """`($23,820.3)`, `($1.2M)`, `(-$5)` -> Decimal.

    The parentheses are a wrapper, not an accounting negative: an unsigned figure takes the sign
    of the SOL gain of the same row.
    """
    text = _required("usd_gain", raw)
    match, value = _number("usd_gain", _USD, text)
    value = value.quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN)
    if match["sign"] and match["sign2"]:
        raise ParseError("usd_gain", ErrorCode.PARSE_BAD_NUMBER, f"usd_gain: two signs in {text!r}")
    sign = match["sign"] or match["sign2"]
    negative = sign == "-" if sign else sol_gain < 0
    return -value if negative else value


def parse_record(raw: str | None) -> tuple[int, int]:
    """`123/45` -> (wins, losses); `0/0` is a valid record."""
    text = _required("record", raw)
    match = _RECORD.match(text)
    if match is None:
        raise ParseError("record", ErrorCode.PARSE_BAD_RECORD, f"record: cannot read {text!r}")
    wins, losses = (int(match[k].replace(",", "")) for k in ("wins", "losses"))
    if max(wins, losses) > MAX_COUNT:
        raise ParseError("record", ErrorCode.PARSE_BAD_RECORD, f"record: {text!r} is out of range")
    return wins, losses


def parse_wallet(href: str | None) -> str:
    """The wallet from an account link `/account/<wallet>` (query, fragment, host ignored)."""
    text = _required("wallet", href)
    path = urlsplit(text).path.rstrip("/")
    if not path.startswith(sel.ACCOUNT_PATH_PREFIX):
        raise ParseError("wallet", ErrorCode.PARSE_BAD_WALLET, f"not an account link: {text!r}")
    wallet = path[len(sel.ACCOUNT_PATH_PREFIX) :]
    if not _BASE58_WALLET.match(wallet):
        raise ParseError(
            "wallet", ErrorCode.PARSE_BAD_WALLET, f"not a base58 wallet of 32-44 chars: {wallet!r}"
        )
    return wallet


def parse_x_handle(hrefs: Sequence[str | None]) -> str | None:
    """The handle of the first X profile link; intent, status and other page links are ignored.

    A profile link whose handle is not a valid X handle is an error, not a missing handle.
    """
    for href in hrefs:
        parts = urlsplit(clean_text(href))
        if parts.hostname not in sel.X_HOSTS:
            continue
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) != 1 or segments[0].lower() in _X_RESERVED:
            continue
        handle = segments[0].removeprefix("@")
        if not _X_HANDLE.match(handle):
            raise ParseError(
                "x_handle", ErrorCode.PARSE_BAD_HANDLE, f"not a valid X handle: {handle!r}"
            )
        return handle
    return None


def parse_row(position: int, raw: Mapping[str, Any]) -> ParsedRow | Reject:
    """One row (1-based page position = rank) to a `ParsedRow`, or a `Reject` saying why not."""
    try:
        wallet = parse_wallet(raw.get("href"))
        username = _required("username", raw.get("name"))
        x_handle = parse_x_handle(raw.get("x_hrefs") or [])
        wins, losses = parse_record(raw.get("record"))
        sol_gain = parse_sol(raw.get("sol"))
        return ParsedRow(
            rank=position,
            username=username,
            wallet=wallet,
            x_handle=x_handle,
            wins=wins,
            losses=losses,
            sol_gain=sol_gain,
            usd_gain=parse_usd(raw.get("usd"), sol_gain=sol_gain),
        )
    except ParseError as err:
        return Reject(position, dict(raw), err.field, err.code, err.reason)


def parse_rows(raws: Sequence[Mapping[str, Any]]) -> tuple[list[ParsedRow], list[Reject]]:
    """Every row of a page. A wallet seen again further down is rejected: one KOL, one rank."""
    parsed: list[ParsedRow] = []
    rejects: list[Reject] = []
    first_rank: dict[str, int] = {}
    for position, raw in enumerate(raws, start=1):
        row = parse_row(position, raw)
        if isinstance(row, ParsedRow) and row.wallet in first_rank:
            row = Reject(
                position,
                dict(raw),
                "wallet",
                ErrorCode.PARSE_DUPLICATE_WALLET,
                f"wallet {row.wallet} already at rank {first_rank[row.wallet]}",
            )
        if isinstance(row, ParsedRow):
            first_rank[row.wallet] = row.rank
            parsed.append(row)
        else:
            rejects.append(row)
    return parsed, rejects


def layout_changed(rows_found: int, rejects: Sequence[Reject]) -> str | None:
    """Why the page looks changed (most rows unreadable), or None when it does not."""
    if len(rejects) <= sel.LAYOUT_CHANGED_REJECTED_SHARE * rows_found:
        return None
    reasons = Counter(r.code.value for r in rejects).most_common()
    detail = ", ".join(f"{code}: {n}" for code, n in reasons)
    return f"{len(rejects)} of {rows_found} rows unreadable ({detail})"
