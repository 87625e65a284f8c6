"""The login throttle's rule (services.ops.auth.ThrottlePolicy), table-driven."""

from __future__ import annotations

import datetime as dt

import pytest

from services.ops.auth import ThrottlePolicy

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
POLICY = ThrottlePolicy(free=3, max_failures=6, lock=dt.timedelta(minutes=15))


@pytest.mark.parametrize(
    ("failures", "last_ago", "locked_for", "wait"),
    [
        (0, 0, None, 0),  # nothing to wait for
        (2, 0, None, 0),  # still free
        (3, 0, None, 1),  # first paid attempt: 1 s after the last failure
        (3, 1, None, 0),  # ...which has passed
        (4, 0, None, 2),  # then 2 s
        (5, 1, None, 3),  # 4 s, one already gone
        (5, 16 * 60, None, 0),  # a run of failures is forgotten after the lock time
        (6, 0, 900, 900),  # locked: the lock's remainder
        (6, 60, -1, 0),  # the lock is over, and the backoff (8 s) passed long ago
    ],
)
def test_wait(failures: int, last_ago: int, locked_for: int | None, wait: int) -> None:
    locked = None if locked_for is None else T0 + locked_for * S
    assert POLICY.wait(failures, T0 - last_ago * S, locked, T0) == max(0, wait) * S


@pytest.mark.parametrize(
    ("failures", "last_ago", "counted", "locks"),
    [
        (0, None, 1, False),
        (2, 10, 3, False),
        (5, 10, 6, True),  # the maximum locks
        (7, 10, 8, True),  # and every failure past it locks again
        (5, 16 * 60, 1, False),  # a stale run starts over
    ],
)
def test_after_failure(failures: int, last_ago: int | None, counted: int, locks: bool) -> None:
    last = None if last_ago is None else T0 - last_ago * S
    got, locked = POLICY.after_failure(failures, last, T0)
    assert got == counted
    assert locked == (T0 + POLICY.lock if locks else None)
