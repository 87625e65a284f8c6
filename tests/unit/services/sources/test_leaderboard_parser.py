"""The pure leaderboard parser: every format the page shows, and every reason a row is rejected."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.errors import ErrorCode
from services.sources.leaderboard_parser import (
    ParsedRow,
    ParseError,
    Reject,
    layout_changed,
    parse_record,
    parse_row,
    parse_rows,
    parse_sol,
    parse_usd,
    parse_wallet,
    parse_x_handle,
)
from standins.kolscan_standin import compact, format_sol, format_usd

W44 = "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"
W32 = "11111111111111111111111111111112"
D = Decimal


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+122.75 Sol", D("122.75")),
        ("-3.5 Sol", D("-3.5")),
        ("\u22123.5 Sol", D("-3.5")),  # unicode minus
        ("+1,234,567.89 Sol", D("1234567.89")),
        ("0 Sol", D("0")),
        ("0.00 Sol", D("0")),
        ("+12.3K Sol", D("12300")),
        ("\u22121.5M Sol", D("-1500000")),
        ("+1.2k sol", D("1200")),
        ("  +5\u00a0Sol \n", D("5")),  # nbsp and stray whitespace
        ("+ 7 Sol", D("7")),
        ("+.5 Sol", D("0.5")),
        ("+1.2345675 Sol", D("1.234568")),  # NUMERIC(24, 6): half-even at the column's scale
    ],
)
def test_sol_formats(raw: str, expected: Decimal) -> None:
    assert parse_sol(raw) == expected


@pytest.mark.parametrize(
    ("raw", "sol", "expected"),
    [
        ("($23,820.3)", D("122.75"), D("23820.3")),
        ("($23,820.3)", D("-122.75"), D("-23820.3")),  # the sign follows the SOL gain
        ("($0)", D("0"), D("0")),
        ("($1.2K)", D("-8"), D("-1200")),
        ("($3.45M)", D("9000"), D("3450000")),
        ("(-$5)", D("1"), D("-5")),  # its own sign wins
        ("($-5)", D("1"), D("-5")),
        ("(\u2212$1.2K)", D("1"), D("-1200")),
        ("(+$5)", D("-1"), D("5")),
        ("( $ 1,000 )", D("1"), D("1000")),
        ("(\u00a0$12.5\u00a0)", D("1"), D("12.5")),
        ("($1.235)", D("1"), D("1.24")),  # NUMERIC(24, 2)
    ],
)
def test_usd_formats(raw: str, sol: Decimal, expected: Decimal) -> None:
    assert parse_usd(raw, sol_gain=sol) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123/45", (123, 45)),
        ("0/0", (0, 0)),
        (" 12 / 3 ", (12, 3)),
        ("1,234/56", (1234, 56)),
        ("7\u00a0/\u00a08", (7, 8)),
    ],
)
def test_record_formats(raw: str, expected: tuple[int, int]) -> None:
    assert parse_record(raw) == expected


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        (f"/account/{W44}", W44),
        (f"/account/{W44}?timeframe=1", W44),
        (f"https://kolscan.io/account/{W44}/", W44),
        (f"/account/{W32}", W32),
    ],
)
def test_wallet_from_account_link(href: str, expected: str) -> None:
    assert parse_wallet(href) == expected


@pytest.mark.parametrize(
    ("hrefs", "expected"),
    [
        ([], None),
        ([None], None),
        (["https://x.com/alice_sol"], "alice_sol"),
        (["https://twitter.com/Bob"], "Bob"),
        (["https://www.x.com/Carol/"], "Carol"),
        (["https://mobile.twitter.com/dave?ref=kolscan"], "dave"),
        (["https://x.com/@erin"], "erin"),
        (["https://x.com/intent/follow?screen_name=a", "https://twitter.com/bob"], "bob"),
        (["https://x.com/alice/status/1790000000000000000"], None),
        (["https://x.com/i/communities/123"], None),
        (["https://x.com/home"], None),
        (["https://notx.com/alice"], None),
        (["https://x.com.evil.example/alice"], None),
        (["https://x.com/abcdefghijklmno"], "abcdefghijklmno"),  # 15 characters
    ],
)
def test_x_handle_from_profile_link(hrefs: list[str | None], expected: str | None) -> None:
    assert parse_x_handle(hrefs) == expected


REJECTIONS: list[tuple[Any, Any, str, ErrorCode]] = [
    (parse_sol, None, "sol_gain", ErrorCode.PARSE_MISSING_FIELD),
    (parse_sol, "  \u00a0 ", "sol_gain", ErrorCode.PARSE_MISSING_FIELD),
    (parse_sol, "NaN Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "+12..5 Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "1,23 Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "+12.5", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "+12.5 USD", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "++1 Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "1e5 Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "+1.2B Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "1,000,000,000,000,000 Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_sol, "1000000000000K Sol", "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
    (lambda r: parse_usd(r, sol_gain=D(1)), None, "usd_gain", ErrorCode.PARSE_MISSING_FIELD),
    (lambda r: parse_usd(r, sol_gain=D(1)), "$23.5", "usd_gain", ErrorCode.PARSE_BAD_NUMBER),
    (lambda r: parse_usd(r, sol_gain=D(1)), "(23.5)", "usd_gain", ErrorCode.PARSE_BAD_NUMBER),
    (lambda r: parse_usd(r, sol_gain=D(1)), "(-$-5)", "usd_gain", ErrorCode.PARSE_BAD_NUMBER),
    (lambda r: parse_usd(r, sol_gain=D(1)), "($abc)", "usd_gain", ErrorCode.PARSE_BAD_NUMBER),
    (lambda r: parse_usd(r, sol_gain=D(1)), "($1,2345)", "usd_gain", ErrorCode.PARSE_BAD_NUMBER),
    (parse_record, None, "record", ErrorCode.PARSE_MISSING_FIELD),
    (parse_record, "12-3", "record", ErrorCode.PARSE_BAD_RECORD),
    (parse_record, "12/", "record", ErrorCode.PARSE_BAD_RECORD),
    (parse_record, "/3", "record", ErrorCode.PARSE_BAD_RECORD),
    (parse_record, "-1/3", "record", ErrorCode.PARSE_BAD_RECORD),
    (parse_record, "1.5/2", "record", ErrorCode.PARSE_BAD_RECORD),
    (parse_record, "a/b", "record", ErrorCode.PARSE_BAD_RECORD),
    (parse_record, "99999999999/1", "record", ErrorCode.PARSE_BAD_RECORD),
    (parse_wallet, None, "wallet", ErrorCode.PARSE_MISSING_FIELD),
    (parse_wallet, "/account/", "wallet", ErrorCode.PARSE_BAD_WALLET),
    (parse_wallet, "/account/0OIl" + W44[4:], "wallet", ErrorCode.PARSE_BAD_WALLET),
    (parse_wallet, f"/account/{W32[:-1]}", "wallet", ErrorCode.PARSE_BAD_WALLET),  # 31 chars
    (parse_wallet, f"/account/{W44}Z", "wallet", ErrorCode.PARSE_BAD_WALLET),  # 45 chars
    (parse_wallet, f"/profile/{W44}", "wallet", ErrorCode.PARSE_BAD_WALLET),
    (parse_x_handle, ["https://x.com/this-is-bad"], "x_handle", ErrorCode.PARSE_BAD_HANDLE),
    (parse_x_handle, ["https://x.com/abcdefghijklmnop"], "x_handle", ErrorCode.PARSE_BAD_HANDLE),
]


@pytest.mark.parametrize(("parse", "raw", "field", "code"), REJECTIONS)
def test_unreadable_values_are_errors_never_zero(
    parse: Any, raw: Any, field: str, code: ErrorCode
) -> None:
    with pytest.raises(ParseError) as err:
        parse(raw)
    assert (err.value.field, err.value.code) == (field, code)
    assert err.value.reason


def _raw(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "href": f"/account/{W44}?timeframe=1",
        "name": "\n  Cented\u00a0 ",
        "x_hrefs": ["https://x.com/cented_sol"],
        "record": "123/45",
        "sol": "\u2212122.75 Sol",
        "usd": "($23,820.3)",
    }
    return raw | overrides


def test_a_whole_row_is_normalised() -> None:
    assert parse_row(3, _raw()) == ParsedRow(
        rank=3,
        username="Cented",
        wallet=W44,
        x_handle="cented_sol",
        wins=123,
        losses=45,
        sol_gain=D("-122.75"),
        usd_gain=D("-23820.3"),
    )


def test_zero_record_and_missing_handle_are_valid() -> None:
    row = parse_row(1, _raw(x_hrefs=[], record="0/0", sol="0 Sol", usd="($0)"))
    assert isinstance(row, ParsedRow)
    assert (row.x_handle, row.wins, row.losses, row.sol_gain, row.usd_gain) == (None, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"href": None}, "wallet", ErrorCode.PARSE_MISSING_FIELD),
        ({"name": " "}, "username", ErrorCode.PARSE_MISSING_FIELD),
        ({"x_hrefs": ["https://x.com/bad-handle"]}, "x_handle", ErrorCode.PARSE_BAD_HANDLE),
        ({"record": None}, "record", ErrorCode.PARSE_MISSING_FIELD),
        ({"sol": "NaN Sol"}, "sol_gain", ErrorCode.PARSE_BAD_NUMBER),
        ({"usd": None}, "usd_gain", ErrorCode.PARSE_MISSING_FIELD),
    ],
)
def test_a_bad_field_rejects_the_row_with_its_raw_text(
    overrides: dict[str, Any], field: str, code: ErrorCode
) -> None:
    raw = _raw(**overrides)
    reject = parse_row(7, raw)
    assert isinstance(reject, Reject)
    assert (reject.position, reject.field, reject.code, reject.raw) == (7, field, code, raw)


def test_ranks_are_page_positions_and_a_repeated_wallet_is_rejected() -> None:
    other = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
    raws = [
        _raw(),
        _raw(href=f"/account/{other}", sol="oops"),
        _raw(href=f"/account/{other}"),
        _raw(name="Cented again"),
    ]
    parsed, rejects = parse_rows(raws)
    assert [(r.rank, r.wallet) for r in parsed] == [(1, W44), (3, other)]
    assert [(r.position, r.code) for r in rejects] == [
        (2, ErrorCode.PARSE_BAD_NUMBER),
        (4, ErrorCode.PARSE_DUPLICATE_WALLET),
    ]
    assert "rank 1" in rejects[1].reason


def _rejects(n: int) -> list[Reject]:
    return [Reject(i, {}, "sol_gain", ErrorCode.PARSE_MISSING_FIELD, "x") for i in range(n)]


@pytest.mark.parametrize(
    ("found", "rejected", "changed"),
    [(40, 0, False), (40, 20, False), (40, 21, True), (0, 0, False)],
)
def test_layout_changed_when_most_rows_are_unreadable(
    found: int, rejected: int, changed: bool
) -> None:
    problem = layout_changed(found, _rejects(rejected))
    assert (problem is not None) == changed
    if problem:
        assert f"{rejected} of {found}" in problem and "PARSE_MISSING_FIELD" in problem


# --- round trips through the site's own formats (the stand-in's formatter) --------------------

sol_values = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False)
usd_values = st.decimals(min_value=-(10**11), max_value=10**11, places=1, allow_nan=False)


@given(sol_values, st.sampled_from(["-", "\u2212"]))
def test_sol_round_trip(value: Decimal, minus: str) -> None:
    assert parse_sol(format_sol(value, minus=minus)) == value


@given(sol_values)
def test_sol_round_trip_with_suffix(value: Decimal) -> None:
    assert parse_sol(format_sol(compact(value), use_suffix=True)) == compact(value)


@given(usd_values, st.booleans())
def test_unsigned_usd_takes_the_sol_sign(value: Decimal, use_suffix: bool) -> None:
    shown = compact(value) if use_suffix else value
    text = format_usd(shown, use_suffix=use_suffix)
    assert "-" not in text
    assert parse_usd(text, sol_gain=shown) == shown


@given(usd_values, st.sampled_from(["-", "\u2212"]))
def test_signed_usd_keeps_its_own_sign(value: Decimal, minus: str) -> None:
    text = format_usd(value, signed=True, minus=minus)
    assert parse_usd(text, sol_gain=-value) == value


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_record_round_trip(wins: int, losses: int) -> None:
    assert parse_record(f"{wins:,}/{losses:,}") == (wins, losses)
