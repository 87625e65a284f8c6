"""The storm's invariants, each read from one consistent snapshot of the database.

`check_all` opens one REPEATABLE READ transaction on a connection of its own (application name
`storm-checker`, which the chaos thread never terminates) and runs every check in it, so a
checkpoint taken while money moves still sees one instant. Each check returns every violation it
finds (capped), not just the first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.engine import sqlalchemy_url
from services.errors import ErrorCode
from services.money.integrity import check_integrity

MAX_SHOWN = 5


@dataclass(frozen=True)
class Window:
    """The resolution policy's windows, as configured for the processes under test."""

    lag: dt.timedelta
    max_age: dt.timedelta


@dataclass
class Result:
    name: str
    violations: list[str] = field(default_factory=list)
    checked: int = 0  # how many rows/markets the check looked at

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        text_ = f"{verdict}  {self.name} ({self.checked} checked)"
        for v in self.violations[:MAX_SHOWN]:
            text_ += f"\n        - {v}"
        if len(self.violations) > MAX_SHOWN:
            text_ += f"\n        - ... {len(self.violations) - MAX_SHOWN} more"
        return text_


def checker_engine(url: str) -> Engine:
    return create_engine(
        sqlalchemy_url(url),
        isolation_level="REPEATABLE READ",
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"application_name": "storm-checker"},
    )


def check_all(
    engine: Engine, *, window: Window, capital: Decimal, final: bool = False
) -> list[Result]:
    """Every invariant in one snapshot. `capital` is what came in from outside (house capital and
    user deposits, as the storm counted them); `final` adds the checks that hold only once the
    system is quiet (every due market decided)."""
    checks: list[Callable[[Session], Result]] = [
        _integrity,
        lambda s: _conservation(s, capital),
        _paid_once,
        lambda s: _evidence_in_window(s, window),
        _never_no_by_error,
        _cancelled_with_reason,
        _no_bet_outside_trading_hours,
    ]
    if final:
        checks.append(_every_due_market_decided)
    with Session(engine) as session, session.begin():
        session.execute(text("SET TRANSACTION READ ONLY"))
        return [check(session) for check in checks]


# -- the checks -----------------------------------------------------------------------------------


def _integrity(s: Session) -> Result:
    report = check_integrity(s)
    return Result(
        "integrity check clean (balances = ledger, transactions balanced, final escrow empty,"
        " no OPEN bet in a final market, CPMM escrow covers shares)",
        [f"{v.check}: {v.subject}: {v.detail}" for v in report.violations],
        checked=len(report.checks_run),
    )


def _conservation(s: Session, capital: Decimal) -> Result:
    row = s.execute(
        text(
            "SELECT sum(balance), sum(balance) FILTER (WHERE kind <> 'EXTERNAL'),"
            " -sum(balance) FILTER (WHERE kind = 'EXTERNAL'), count(*) FROM accounts"
        )
    ).one()
    total, inside, external, accounts = (Decimal(row[0]), Decimal(row[1]), Decimal(row[2]), row[3])
    problems = []
    if total != 0:
        problems.append(f"all accounts sum to {total}, not 0")
    if inside != capital:
        problems.append(
            f"users + escrow + fee + house hold {inside}, but {capital} came in from outside"
        )
    if external != capital:
        problems.append(f"EXTERNAL shows {external} paid in, the storm paid in {capital}")
    return Result(
        "money conserved: accounts sum to 0; users+escrow+fee+house = deposits + house capital",
        problems,
        checked=accounts,
    )


def _paid_once(s: Session) -> Result:
    rows = s.execute(
        text(
            """
            SELECT m.id, m.status,
                   count(st.id) AS total,
                   count(st.id) FILTER (WHERE st.active) AS active,
                   count(st.id) FILTER (WHERE st.reversal_transaction_id IS NOT NULL) AS reversed,
                   (SELECT count(*) FROM ledger_transactions t
                     WHERE t.market_id = m.id AND t.kind IN ('PAYOUT', 'REFUND')) AS payouts,
                   (SELECT count(*) FROM ledger_transactions t
                     WHERE t.market_id = m.id AND t.kind = 'REVERSAL') AS reversals,
                   bool_or(st.active AND st.kind <> CASE m.status WHEN 'RESOLVED' THEN 'SETTLE'
                                                   ELSE 'REFUND' END) AS wrong_kind
            FROM markets m LEFT JOIN settlements st ON st.market_id = m.id
            GROUP BY m.id ORDER BY m.id
            """
        )
    ).all()
    problems = []
    for r in rows:
        expected_active = 0 if r.status == "OPEN" else 1
        if r.active != expected_active:
            problems.append(f"market {r.id} {r.status} has {r.active} active settlements")
        if r.total != 1 + r.reversed and r.status != "OPEN":
            problems.append(
                f"market {r.id}: {r.total} settlements but {r.reversed} reversals (paid twice?)"
            )
        if r.payouts != r.total or r.reversals != r.reversed:
            problems.append(
                f"market {r.id}: ledger has {r.payouts} payouts/refunds and {r.reversals}"
                f" reversals for {r.total} settlements, {r.reversed} reversed"
            )
        if r.wrong_kind:
            problems.append(f"market {r.id} {r.status}: active settlement of the wrong kind")
    return Result(
        "no market paid or refunded twice (active <= 1, settlements = 1 + reversals, ledger"
        " agrees)",
        problems,
        checked=len(rows),
    )


def _when(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def _evidence_problem(
    market: Any, attempt: Any, runs: dict[int, Any], window: Window
) -> str | None:
    """Why this RESOLVED_* attempt's evidence is outside the rules (None: it is inside)."""
    ev = attempt.evidence or {}
    source = ev.get("source")
    end = market.closes_at + window.lag
    if source == "scrape_run":
        run = runs.get(ev.get("run_id"))
        at = _when(ev.get("snapshot_at"))
        if run is None:
            return f"evidence names scrape run {ev.get('run_id')} which does not exist"
        if run.status not in ("SUCCESS", "PARTIAL") or run.timeframe != market.timeframe:
            return f"scrape run {run.id} is {run.status} {run.timeframe}"
        if run.snapshot_at != at:
            return f"evidence snapshot_at {at} but run {run.id} was taken at {run.snapshot_at}"
        if not market.closes_at <= at <= end:
            return f"snapshot_at {at} outside [{market.closes_at}, {end}]"
        return None
    if source in ("x_api", "follower_cache"):
        at = _when(ev.get("fetched_at"))
        start = max(market.opens_at, market.closes_at - window.max_age)
        if not isinstance(ev.get("followers"), int):
            return "follower evidence without a count"
        pinned = ((market.baseline or {}).get("a") or {}).get("x_user_id")
        if pinned is None or ev.get("x_user_id") != pinned:
            return f"counted X account {ev.get('x_user_id')!r}, the market pinned {pinned!r}"
        if not start <= at <= end:
            return f"follower count fetched_at {at} outside [{start}, {end}]"
        return None
    return f"evidence has no usable source: {ev!r:.200}"


def _resolved_attempts(s: Session) -> list[Any]:
    return s.execute(
        text(
            "SELECT r.id, r.market_id, r.result, r.error_code, r.evidence, r.finished_at"
            " FROM resolution_attempts r WHERE r.result IN ('RESOLVED_YES', 'RESOLVED_NO')"
            " ORDER BY r.id"
        )
    ).all()


def _evidence_in_window(s: Session, window: Window) -> Result:
    markets = {
        m.id: m
        for m in s.execute(
            text("SELECT id, type, timeframe, opens_at, closes_at, baseline FROM markets")
        )
    }
    runs = {
        r.id: r
        for r in s.execute(text("SELECT id, status, timeframe, snapshot_at FROM scrape_runs"))
    }
    problems = []
    attempts = _resolved_attempts(s)
    by_market: dict[int, list[Any]] = {}
    for a in attempts:
        by_market.setdefault(a.market_id, []).append(a)
        why = _evidence_problem(markets[a.market_id], a, runs, window)
        if why:
            problems.append(f"market {a.market_id} attempt {a.id} {a.result}: {why}")
    # Each resolver settlement has exactly its one attempt; every other SETTLE is an operator's
    # re-settle and carries that operator's reason (audited).
    settles = s.execute(
        text(
            "SELECT st.market_id, st.outcome, st.actor, st.reason,"
            " EXISTS (SELECT 1 FROM audit_log l WHERE l.action = 'resettle' AND l.result = 'OK'"
            "         AND l.target_id = st.market_id::text AND l.reason = st.reason"
            "         AND l.username = st.actor) AS audited"
            " FROM settlements st WHERE st.kind = 'SETTLE'"
        )
    ).all()
    for st in settles:
        if st.actor == "resolver":
            mine = [a for a in by_market.get(st.market_id, []) if a.result[9:] == st.outcome]
            if len(mine) != 1:
                problems.append(
                    f"market {st.market_id}: resolver settled {st.outcome} with {len(mine)}"
                    " matching RESOLVED attempts"
                )
        elif not (st.reason or "").strip() or not st.audited:
            problems.append(
                f"market {st.market_id}: settled {st.outcome} by {st.actor!r} without an audited"
                " operator reason"
            )
    for market_id, mine in by_market.items():
        if len(mine) > 1:
            problems.append(f"market {market_id} has {len(mine)} RESOLVED attempts")
    return Result(
        "every resolution used evidence inside the allowed window (or is an audited operator"
        " re-settle with a reason)",
        problems,
        checked=len(attempts) + len(settles),
    )


def _never_no_by_error(s: Session) -> Result:
    rows = s.execute(
        text(
            """
            SELECT m.id, m.outcome, st.actor,
                   (SELECT r.result || ':' || coalesce(r.error_code, '')
                      || ':' || coalesce(r.evidence->>'source', '')
                      FROM resolution_attempts r WHERE r.market_id = m.id
                      ORDER BY r.finished_at DESC, r.id DESC LIMIT 1) AS latest
            FROM markets m JOIN settlements st ON st.market_id = m.id AND st.active
            WHERE m.status = 'RESOLVED'
            """
        )
    ).all()
    problems = []
    for r in rows:
        if r.actor != "resolver":
            continue  # an operator's re-settle: checked with its reason above
        result, code, source = (r.latest or "::").split(":", 2)
        if result != f"RESOLVED_{r.outcome}" or code or not source:
            problems.append(
                f"market {r.id} RESOLVED {r.outcome} but its latest attempt is {r.latest!r}"
            )
    for a in _resolved_attempts(s):
        if a.error_code:
            problems.append(f"attempt {a.id} {a.result} carries error {a.error_code}")
    return Result(
        "no market resolved because of an error (latest attempt of every resolver-resolved"
        " market is RESOLVED_<outcome> with evidence, no error code)",
        problems,
        checked=len(rows),
    )


def _cancelled_with_reason(s: Session) -> Result:
    rows = s.execute(
        text(
            """
            SELECT m.id, m.cancel_reason, m.cancel_detail, st.actor,
                   EXISTS (SELECT 1 FROM resolution_attempts r WHERE r.market_id = m.id
                           AND r.result = 'CANCELLED' AND r.error_code = m.cancel_reason)
                       AS attempt
            FROM markets m JOIN settlements st ON st.market_id = m.id AND st.active
            WHERE m.status = 'CANCELLED'
            """
        )
    ).all()
    codes = {c.value for c in ErrorCode}
    problems = []
    for r in rows:
        if r.cancel_reason not in codes or not (r.cancel_detail or "").strip():
            problems.append(f"market {r.id} cancelled without a reason: {r.cancel_reason!r}")
        elif r.actor == "resolver" and not r.attempt:
            problems.append(f"market {r.id} cancelled by the resolver without its attempt")
        elif (r.cancel_reason == ErrorCode.OPERATOR_CANCELLED) == (r.actor == "resolver"):
            problems.append(f"market {r.id}: {r.cancel_reason} by {r.actor!r}")
    return Result(
        "every CANCELLED market carries a reason code and detail (resolver ones their attempt)",
        problems,
        checked=len(rows),
    )


def _no_bet_outside_trading_hours(s: Session) -> Result:
    row = s.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE b.created_at >= m.closes_at"
            "                                  OR b.created_at < m.opens_at)"
            " FROM bets b JOIN markets m ON m.id = b.market_id"
        )
    ).one()
    problems = [f"{row[1]} bets placed outside their market's trading hours"] if row[1] else []
    return Result("no bet accepted before its market opened or after it closed", problems, row[0])


def _every_due_market_decided(s: Session) -> Result:
    rows = s.execute(
        text(
            "SELECT m.id, m.type, m.claimed_by, m.needs_attention,"
            " (SELECT r.result || ' ' || coalesce(r.error_code, '') FROM resolution_attempts r"
            "   WHERE r.market_id = m.id ORDER BY r.id DESC LIMIT 1) AS latest"
            " FROM markets m WHERE m.status = 'OPEN' AND m.closes_at <= now() ORDER BY m.id"
        )
    ).all()
    total = s.execute(text("SELECT count(*) FROM markets WHERE closes_at <= now()")).scalar_one()
    return Result(
        "every due market eventually RESOLVED or CANCELLED with a reason",
        [
            f"market {r.id} ({r.type}) still OPEN: lease {r.claimed_by!r}, attention"
            f" {r.needs_attention}, latest attempt {r.latest!r}"
            for r in rows
        ],
        checked=total,
    )
