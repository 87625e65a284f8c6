"""The vocabulary's derived facts, against what the outside world says they are."""

from __future__ import annotations

from services.vocabulary import MarketStatus, Role, Timeframe, sql_in


def test_timeframes_are_kolscans_boards() -> None:
    # kolscan.io/leaderboard?timeframe=1|7|30 are the daily, weekly and monthly boards.
    assert {t.value: (t.days, t.kolscan_param) for t in Timeframe} == {
        "daily": (1, "1"),
        "weekly": (7, "7"),
        "monthly": (30, "30"),
    }


def test_each_role_includes_the_ones_before_it() -> None:
    assert Role.ADMIN.includes(Role.OPERATOR) and Role.OPERATOR.includes(Role.ANALYST)
    assert Role.ANALYST.includes(Role.VIEWER) and Role.VIEWER.includes(Role.VIEWER)
    assert not Role.VIEWER.includes(Role.ANALYST) and not Role.OPERATOR.includes(Role.ADMIN)


def test_sql_in_lists_the_stored_values() -> None:
    assert sql_in("status", MarketStatus) == "status IN ('OPEN', 'RESOLVED', 'CANCELLED')"
    assert sql_in("m.status", (MarketStatus.OPEN,)) == "m.status IN ('OPEN')"
