"""The resolver: decides due markets from fresh evidence, or cancels and refunds them.

A sweep leases due markets (`FOR UPDATE SKIP LOCKED`, so overlapping sweeps take disjoint sets),
gathers evidence once per pass (one usable snapshot per market, at most one on-demand scrape per
timeframe, one batched X API lookup), and then handles every market inside its own error
boundary. The rules (PRODUCT.md section 3):

- never NO by default: only `outcomes.decide` produces an outcome, from usable evidence;
- transient failures (scrape failed, X API down, stale or missing data) defer the market until
  the grace period after its close runs out, then cancel it; permanent ones cancel at once;
- a settlement that fails is rolled back and the market cancelled and refunded in a fresh
  transaction; if even that fails the market stays OPEN, flagged for attention;
- every attempt is recorded with the evidence it used.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import DateTime, Interval, literal_column, text
from sqlalchemy.orm import Session, aliased

from config import get_settings
from db import rules
from db.engine import read_session, retrying, transaction
from db.models import Market, ResolutionAttempt, ScrapeRun
from services.errors import ErrorCode, ServiceError
from services.money import settlement
from services.resolution import outcomes
from services.resolution.outcomes import (
    Definition,
    Evidence,
    KolStats,
    Snapshot,
    Undecided,
)
from services.sources import followers, scraper
from services.sources.xapi import XApiError
from services.vocabulary import (
    SUCCEEDED_SCRAPES,
    AttemptResult,
    MarketStatus,
    ScrapeStatus,
    ScrapeTrigger,
    Side,
)

log = logging.getLogger("kolops.resolver")

ACTOR = "resolver"
CLAIM_S = 300
# Why a market could not be decided, for the reasons that may heal by themselves before the
# grace period ends (a later scrape, the X API coming back). A failed X lookup says itself
# whether it may heal (`XApiError.transient`).
TRANSIENT = frozenset(
    {
        ErrorCode.SCRAPE_FAILED,
        ErrorCode.STALE_SCRAPE_DATA,
        ErrorCode.X_API_UNAVAILABLE,
        ErrorCode.STALE_FOLLOWER_DATA,
        ErrorCode.MISSING_KOL_DATA,
        ErrorCode.INTERNAL_ERROR,
    }
)


@dataclass(frozen=True)
class DueMarket:
    """A market as resolution reads it (a due one, or a resolved one re-evaluated)."""

    # No X handle: a follower market reads the account pinned in its baseline, never the handle
    # its KOL shows now (every scrape overwrites that).
    id: int
    definition: Definition
    opens_at: dt.datetime
    closes_at: dt.datetime
    # `db.rules.grace_ends`: the close plus the grace period plus the time held after the close.
    grace_ends: dt.datetime


@dataclass
class SweepReport:
    claimed: int = 0
    resolved_yes: int = 0
    resolved_no: int = 0
    cancelled: int = 0
    deferred: int = 0
    errors: int = 0
    already_final: int = 0
    held: int = 0
    scrapes: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


@dataclass
class _Pass:
    """Evidence gathered once per pass, shared by every market that needs it."""

    now: dt.datetime
    lag: dt.timedelta
    grace: dt.timedelta
    max_age: dt.timedelta
    trigger: str
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    # Per timeframe, the usable runs in the windows of the current batch's markets only.
    runs: dict[str, list[tuple[int, dt.datetime]]] = field(default_factory=dict)
    # The on-demand scrape of each timeframe, at most one per pass whatever the number of
    # batches: its result, or what it raised instead (a failed scrape all the same).
    scraped: dict[str, scraper.ScrapeResult | Exception] = field(default_factory=dict)
    # Timeframes whose usable runs could not be read for the current batch, and why.
    unreadable: dict[str, Exception] = field(default_factory=dict)
    readings: dict[str, followers.FollowerReading | Exception] = field(default_factory=dict)


# The rules the claim and the snapshot look-up apply, as the SQL below spells them.
_DUE = rules.sql(rules.due(aliased(Market, name="m")))
_HELD = rules.sql(rules.held(aliased(Market, name="m")))
_GRACE_ENDS = rules.sql(rules.grace_ends(aliased(Market, name="m"), literal_column(":grace")))
_USABLE = rules.sql(rules.usable_run(aliased(ScrapeRun, name="r")))
_IN_WINDOW = rules.sql(
    rules.snapshot_window(
        literal_column("c.closes_at", DateTime(timezone=True)),
        literal_column(":lag", Interval()),
    ).contains(aliased(ScrapeRun, name="r").snapshot_at)
)


# -- claiming -------------------------------------------------------------------------------------

_DUE_COLUMNS = f"""
    m.id, m.type, m.timeframe, m.threshold, m.target_rank, m.baseline, m.opens_at, m.closes_at,
    a.wallet AS wallet_a, b.wallet AS wallet_b, {_GRACE_ENDS} AS grace_ends
"""


def _claim(
    limit: int,
    claimer: str,
    grace: dt.timedelta,
    market_ids: list[int] | None = None,
    skip: Iterable[int] = (),
) -> list[DueMarket]:
    """Lease up to `limit` due OPEN markets no live lease holds (except those in `skip`, already
    handled in this pass); committed at once."""
    where = f"{_DUE} AND NOT (m.id = ANY(:skip))"
    params: dict[str, Any] = {
        "limit": limit,
        "claimer": claimer,
        "lease": CLAIM_S,
        "skip": list(skip),
    }
    if market_ids is not None:
        where += " AND m.id = ANY(:ids)"
        params["ids"] = market_ids
    else:
        where += " AND (m.claim_expires_at IS NULL OR m.claim_expires_at < now())"
    with transaction() as session:
        rows = (
            session.execute(
                text(
                    f"""
                WITH picked AS (
                    SELECT m.id FROM markets m WHERE {where}
                    ORDER BY m.closes_at, m.id LIMIT :limit
                    FOR UPDATE SKIP LOCKED)
                UPDATE markets m SET claimed_by = :claimer,
                       claim_expires_at = now() + make_interval(secs => :lease)
                FROM picked WHERE m.id = picked.id
                RETURNING m.id
                """
                ),
                params,
            )
            .scalars()
            .all()
        )
        return _load(session, list(rows), grace)


def _load(session: Session, market_ids: list[int], grace: dt.timedelta) -> list[DueMarket]:
    """The markets `market_ids` as resolution reads them, earliest close first."""
    if not market_ids:
        return []
    details = (
        session.execute(
            text(
                f"SELECT {_DUE_COLUMNS} FROM markets m JOIN kols a ON a.id = m.kol_a_id"
                " LEFT JOIN kols b ON b.id = m.kol_b_id"
                " WHERE m.id = ANY(:ids) ORDER BY m.closes_at, m.id"
            ),
            {"ids": market_ids, "grace": grace},
        )
        .mappings()
        .all()
    )
    return [
        DueMarket(
            id=r["id"],
            definition=Definition(
                type=r["type"],
                kol_a=r["wallet_a"],
                kol_b=r["wallet_b"],
                timeframe=r["timeframe"],
                threshold=r["threshold"],
                target_rank=r["target_rank"],
                baseline=r["baseline"] or {},
            ),
            opens_at=r["opens_at"],
            closes_at=r["closes_at"],
            grace_ends=r["grace_ends"],
        )
        for r in details
    ]


def _holder(pid: int) -> str:
    """The prefix naming a sweeping process as a lease holder (`host:pid:`)."""
    return f"{socket.gethostname()}:{pid}:"


def release_leases(pid: int) -> int:
    """Free the OPEN markets process `pid` of this host had leased (a job killed at its
    deadline), so that the next pass takes them at once instead of after the lease."""
    with transaction() as session:
        released = session.execute(
            text(
                "UPDATE markets SET claimed_by = NULL, claim_expires_at = NULL"
                f" WHERE status = '{MarketStatus.OPEN}' AND starts_with(claimed_by, :holder)"
            ),
            {"holder": _holder(pid)},
        ).rowcount  # type: ignore[attr-defined]
    return int(released)


def _release(market_id: int) -> None:
    with transaction() as session:
        session.execute(
            text(
                "UPDATE markets SET claimed_by = NULL, claim_expires_at = NULL"
                f" WHERE id = :id AND status = '{MarketStatus.OPEN}'"
            ),
            {"id": market_id},
        )


# -- evidence -------------------------------------------------------------------------------------


def _runs(
    session: Session, timeframe: str, closes: Iterable[dt.datetime], lag: dt.timedelta
) -> list[tuple[int, dt.datetime]]:
    """The usable runs of a timeframe in the snapshot window of any of the closes `closes`,
    earliest first: one range look-up in the usable-snapshot index per close, so the read stays
    as small as the batch however long the history."""
    return [
        (r.id, r.snapshot_at)
        for r in session.execute(
            text(
                "SELECT DISTINCT r.id, r.snapshot_at"
                " FROM unnest(CAST(:closes AS timestamptz[])) AS c(closes_at)"
                " CROSS JOIN LATERAL (SELECT r.id, r.snapshot_at FROM scrape_runs r"
                f"   WHERE r.timeframe = :tf AND {_USABLE} AND {_IN_WINDOW}) r"
                " ORDER BY r.snapshot_at, r.id"
            ),
            {"tf": timeframe, "closes": sorted(set(closes)), "lag": lag},
        )
    ]


def _snapshot(session: Session, run_id: int) -> Snapshot:
    rows = session.execute(
        text(
            "SELECT wallet, rank, wins, losses, sol_gain, usd_gain FROM scraped_kols"
            " WHERE run_id = :id"
        ),
        {"id": run_id},
    )
    return Snapshot(
        {r.wallet: KolStats(r.rank, r.wins, r.losses, r.sol_gain, r.usd_gain) for r in rows}
    )


def _evidence_window(p: _Pass, m: DueMarket) -> rules.Window:
    """When the evidence that decides `m` must have been read (`db.rules`)."""
    if m.definition.type in outcomes.FOLLOWER_TYPES:
        return rules.follower_window(m.closes_at, p.max_age, p.lag)
    return rules.snapshot_window(m.closes_at, p.lag)


def _runs_in_window(p: _Pass, m: DueMarket) -> list[tuple[int, dt.datetime]]:
    """The usable snapshots taken within the market's snapshot window, earliest first."""
    window = rules.snapshot_window(m.closes_at, p.lag)
    return [
        (run_id, at)
        for run_id, at in p.runs.get(m.definition.timeframe or "", [])
        if window.holds(at)
    ]


def _describe(exc: BaseException) -> str:
    """An exception as one line for an attempt's record: its type and message, no traceback."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]


def _gather_snapshots(p: _Pass, markets: list[DueMarket], *, scrape: bool = True) -> None:
    """Read the usable runs of the batch's timeframes, and (with `scrape`) scrape a timeframe on
    demand when it can still help some market and has not been scraped in this pass yet. Never
    raises: what
    fails here becomes the evidence of the markets that needed it ("scrape failed"), decided
    inside their own error boundary, so it never stops the other markets."""
    closes: dict[str, set[dt.datetime]] = {}
    for m in markets:
        if m.definition.type in outcomes.LEADERBOARD_TYPES and m.definition.timeframe:
            closes.setdefault(m.definition.timeframe, set()).add(m.closes_at)
    timeframes = sorted(closes)

    def read_runs(tf: str) -> None:
        try:
            with read_session() as session:
                p.runs[tf] = _runs(session, tf, closes[tf], p.lag)
            p.unreadable.pop(tf, None)
        except Exception as exc:
            log.exception("reading the usable %s runs failed", tf)
            p.runs.pop(tf, None)
            p.unreadable[tf] = exc

    for tf in timeframes:
        read_runs(tf)
        if not scrape or tf in p.scraped or tf in p.unreadable:
            continue
        needy = any(
            m.definition.timeframe == tf
            and m.definition.type in outcomes.LEADERBOARD_TYPES
            and not _runs_in_window(p, m)
            and _evidence_window(p, m).holds(p.now)
            for m in markets
        )
        if not needy:
            continue
        try:
            result = scraper.scrape_leaderboard(tf, trigger=ScrapeTrigger.ON_DEMAND)
        except Exception as exc:
            log.exception("on-demand scrape timeframe=%s raised", tf)
            p.scraped[tf] = exc
            continue
        p.scraped[tf] = result
        log.info("on-demand scrape timeframe=%s run=%s status=%s", tf, result.run_id, result.status)
        if result.status in SUCCEEDED_SCRAPES:
            read_runs(tf)


def _gather_followers(p: _Pass, markets: list[DueMarket]) -> None:
    """One batched lookup, by X user id, of the accounts the batch's follower markets pinned
    when they opened (a market pinning none is invalid and needs no lookup)."""
    user_ids = sorted(
        {
            account.user_id
            for m in markets
            if m.definition.type in outcomes.FOLLOWER_TYPES
            and (account := outcomes.pinned_account(m.definition)) is not None
        }
    )
    if not user_ids:
        return
    try:
        results = followers.fetch_followers_by_id(user_ids)
    except Exception as exc:  # the whole lookup failed: every account shares the failure
        results = dict.fromkeys(user_ids, exc)
    p.readings = dict(results)


def _snapshot_evidence(p: _Pass, m: DueMarket) -> list[tuple[Evidence, dict[str, Any]]] | Undecided:
    """Every usable snapshot in the market's window, earliest first, with its record."""
    runs = _runs_in_window(p, m)
    bounds = rules.snapshot_window(m.closes_at, p.lag)
    window = [bounds.start.isoformat(), bounds.end.isoformat()]
    if not runs:
        timeframe = m.definition.timeframe or ""
        unreadable = p.unreadable.get(timeframe)
        if unreadable is not None:
            return Undecided(
                ErrorCode.INTERNAL_ERROR,
                f"the usable {timeframe} snapshots could not be read: {_describe(unreadable)}",
            )
        scraped = p.scraped.get(timeframe)
        if isinstance(scraped, Exception):
            return Undecided(
                ErrorCode.SCRAPE_FAILED,
                f"on-demand {timeframe} scrape failed: {_describe(scraped)}",
            )
        if scraped is not None and scraped.status == ScrapeStatus.FAILED:
            return Undecided(
                ErrorCode.SCRAPE_FAILED,
                f"on-demand scrape run {scraped.run_id} failed: "
                f"{scraped.error_code} {scraped.error_message or ''}".strip(),
            )
        return Undecided(
            ErrorCode.STALE_SCRAPE_DATA,
            f"no usable {m.definition.timeframe} snapshot taken within {window}",
        )
    return [_with_record(p, m, run_id, at, window) for run_id, at in runs]


def _with_record(
    p: _Pass, m: DueMarket, run_id: int, at: dt.datetime, window: list[str]
) -> tuple[Evidence, dict[str, Any]]:
    if run_id not in p.snapshots:
        with read_session() as session:
            p.snapshots[run_id] = _snapshot(session, run_id)
    snap = p.snapshots[run_id]

    def stats(wallet: str | None) -> dict[str, Any] | None:
        s = snap.rows.get(wallet or "")
        if s is None:
            return None
        return {
            "rank": s.rank,
            "wins": s.wins,
            "losses": s.losses,
            "sol_gain": str(s.sol_gain),
            "usd_gain": str(s.usd_gain),
        }

    record = {
        "source": "scrape_run",
        "run_id": run_id,
        "snapshot_at": at.isoformat(),
        "window": window,
        "snapshot_rows": snap.size,
        "snapshot_complete": snap.complete,
        "kol_a": stats(m.definition.kol_a),
        "kol_b": stats(m.definition.kol_b),
    }
    return Evidence(snapshot=snap), record


def _decide(
    m: DueMarket, candidates: list[tuple[Evidence, dict[str, Any]]]
) -> tuple[outcomes.Decision, dict[str, Any]]:
    """Decide from the earliest snapshot in the window; when a KOL the question needs is missing
    from it (a partial scrape), the next snapshot in the window may still have them."""
    last = len(candidates) - 1
    for i, (evidence, record) in enumerate(candidates):
        decision = outcomes.decide(m.definition, evidence)
        missing = isinstance(decision, Undecided) and decision.code is ErrorCode.MISSING_KOL_DATA
        if not missing or i == last:
            return decision, dict(record)
    raise AssertionError("no candidate snapshot")


def _follower_evidence(p: _Pass, m: DueMarket) -> tuple[Evidence, dict[str, Any]] | Undecided:
    """The follower count at close of the account the market pinned when it opened, read by its
    X user id: from the X API, or else from a usable cached count of that same account."""
    problems = outcomes.definition_problems(m.definition)
    account = outcomes.pinned_account(m.definition)
    if problems or account is None:
        # A baseline of the wrong shape, or one that names no account (an old market): no
        # account can be matched to it, now or later.
        return Undecided(ErrorCode.MISSING_METADATA, "; ".join(problems))
    who = f"@{account.handle} (user {account.user_id})"
    window_end = _evidence_window(p, m).end
    reading = p.readings.get(account.user_id)
    base = {
        "handle": account.handle,
        "x_user_id": account.user_id,
        "baseline_followers": m.definition.baseline["a"]["followers"],
        "window_end": window_end.isoformat(),
    }
    if isinstance(reading, followers.FollowerReading) and reading.fetched_at <= window_end:
        return Evidence(followers_now=reading.followers), {
            **base,
            "source": "x_api",
            "handle_now": reading.handle,
            "followers": reading.followers,
            "fetched_at": reading.fetched_at.isoformat(),
        }
    api_error = reading if isinstance(reading, Exception) else None
    if isinstance(api_error, XApiError) and not api_error.transient:
        # An answer about the account (gone, suspended) or a request that can never work:
        # a cached count from before is no evidence about the account now.
        return Undecided(ErrorCode.MISSING_KOL_DATA, f"X account {who}: {api_error.message}")
    with read_session() as session:
        cached = followers.usable_cached_reading(
            session,
            account.user_id,
            opens_at=m.opens_at,
            closes_at=m.closes_at,
            max_age=p.max_age,
            lag=p.lag,
            now=p.now,
        )
    if cached is not None:
        return Evidence(followers_now=cached.followers), {
            **base,
            "source": "follower_cache",
            "handle_now": cached.handle,
            "followers": cached.followers,
            "fetched_at": cached.fetched_at.isoformat(),
            "api_error": str(api_error) if api_error else None,
        }
    if api_error is not None:
        return Undecided(
            ErrorCode.X_API_UNAVAILABLE,
            f"X API failed for {who} ({api_error}) and no usable cached count",
        )
    return Undecided(
        ErrorCode.STALE_FOLLOWER_DATA, f"no follower count for {who} within the allowed window"
    )


# -- one market -----------------------------------------------------------------------------------


def _attempt(
    m: DueMarket,
    p: _Pass,
    started: dt.datetime,
    result: AttemptResult,
    evidence: dict[str, Any],
    code: ErrorCode | None = None,
    detail: str | None = None,
) -> ResolutionAttempt:
    return ResolutionAttempt(
        market_id=m.id,
        trigger=p.trigger,
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC),
        result=result,
        error_code=code.value if code else None,
        error_detail=detail,
        evidence=evidence,
    )


class _OnHold(Exception):
    """An operator put the market on hold since the pass claimed it: the resolver leaves it."""


class _RunWithdrawn(Exception):
    """The scrape run a decision was made from is no longer usable (quarantined since the pass
    read it): nothing may be settled from it."""


def _final(
    market_id: int,
    change: Callable[[Session], settlement.SettlementResult],
    attempt: Callable[[], ResolutionAttempt],
    what: str,
    evidence_run: int | None = None,
) -> settlement.SettlementResult:
    """Settle or cancel a market and record the attempt that made it final in one transaction
    (a fresh attempt row on every retry), so a market is never final without the record of the
    evidence that made it so. With `evidence_run`, the scrape run the decision used must still
    be usable under a share lock held to the commit (else `_RunWithdrawn`): a quarantine, an
    update of that row, waits for the settlement, and one committed before it is seen here. A
    market put on hold since it was claimed is left alone (`_OnHold`), checked under the market
    row lock the hold also takes."""

    def unit(session: Session) -> settlement.SettlementResult:
        held = session.execute(
            text(f"SELECT {_HELD} FROM markets m WHERE m.id = :id FOR UPDATE"), {"id": market_id}
        ).scalar()
        if held:
            raise _OnHold(market_id)
        if evidence_run is not None:
            usable = session.execute(
                text(f"SELECT 1 FROM scrape_runs r WHERE r.id = :id AND {_USABLE} FOR SHARE"),
                {"id": evidence_run},
            ).first()
            if usable is None:
                raise _RunWithdrawn(evidence_run)
        result = change(session)
        if result.applied:
            made = attempt()
            made.settlement_id = result.settlement_id
            session.add(made)
        return result

    return retrying(unit, what=what)


def _record_attempt(market_id: int, attempt: ResolutionAttempt) -> None:
    """An attempt that changed no money (deferred, or failed) in a transaction of its own.
    Skipped when another caller (an operator's retry, an overlapping sweep) made the market
    final meanwhile: the latest attempt of a final market is the one that made it final. The
    row lock waits for such a settlement in flight."""
    with transaction() as session:
        still_open = session.execute(
            text(
                f"SELECT 1 FROM markets WHERE id = :id AND status = '{MarketStatus.OPEN}'"
                " FOR UPDATE"
            ),
            {"id": market_id},
        ).first()
        if still_open:
            session.add(attempt)


def _flag_attention(market_id: int, reason: str) -> None:
    with transaction() as session:
        session.execute(
            text(
                "UPDATE markets SET needs_attention = true, attention_reason = :r"
                f" WHERE id = :id AND status = '{MarketStatus.OPEN}'"
            ),
            {"id": market_id, "r": reason[:2000]},
        )


def _cancel(
    m: DueMarket,
    p: _Pass,
    started: dt.datetime,
    code: ErrorCode,
    detail: str,
    evidence: dict[str, Any],
    report: SweepReport,
) -> None:
    try:
        result = _final(
            m.id,
            lambda session: settlement.cancel_and_refund(session, m.id, code, detail, actor=ACTOR),
            lambda: _attempt(m, p, started, AttemptResult.CANCELLED, evidence, code, detail),
            f"cancel market {m.id}",
        )
    except _OnHold:
        raise
    except Exception as exc:
        _flag_attention(m.id, f"cancel ({code}) failed: {exc}")
        failed = f"cancel and refund failed: {exc}"
        _record_attempt(
            m.id,
            _attempt(
                m, p, started, AttemptResult.ERROR, evidence, ErrorCode.SETTLEMENT_FAILED, failed
            ),
        )
        report.errors += 1
        log.error("market=%s cancel failed: %s", m.id, exc)
        return
    if result.applied:
        report.cancelled += 1
        log.info("market=%s cancelled reason=%s %s", m.id, code, detail)
    else:
        report.already_final += 1


def _evaluate(m: DueMarket, p: _Pass) -> tuple[outcomes.Decision, dict[str, Any]]:
    """The decision the evidence gathered in `p` gives for `m`, and the record of that
    evidence: the one evidence selection and the one set of outcome rules, for a sweep and for
    a re-evaluation alike."""
    gathered: list[tuple[Evidence, dict[str, Any]]] | Undecided
    if m.definition.type in outcomes.FOLLOWER_TYPES:
        follower = _follower_evidence(p, m)
        gathered = follower if isinstance(follower, Undecided) else [follower]
    elif m.definition.type in outcomes.LEADERBOARD_TYPES:
        gathered = _snapshot_evidence(p, m)
    else:
        gathered = Undecided(ErrorCode.MISSING_METADATA, f"unknown type {m.definition.type!r}")
    if isinstance(gathered, Undecided):
        return gathered, {}
    return _decide(m, gathered)


def _resolve_one(m: DueMarket, p: _Pass, report: SweepReport) -> None:
    started = dt.datetime.now(dt.UTC)
    past_grace = p.now >= m.grace_ends
    decision, evidence = _evaluate(m, p)
    evidence["decided_at"] = started.isoformat()

    if isinstance(decision, Undecided):
        # Data that is stale now and can no longer become fresh is a permanent failure.
        too_late = (
            decision.code in (ErrorCode.STALE_SCRAPE_DATA, ErrorCode.STALE_FOLLOWER_DATA)
            and p.now > _evidence_window(p, m).end
        )
        if decision.code in TRANSIENT and not past_grace and not too_late:
            deferred = _attempt(
                m, p, started, AttemptResult.DEFERRED, evidence, decision.code, decision.detail
            )
            _record_attempt(m.id, deferred)
            _release(m.id)
            report.deferred += 1
            return
        _cancel(m, p, started, decision.code, decision.detail, evidence, report)
        return

    side = Side(decision)
    run_id = evidence.get("run_id") if evidence.get("source") == "scrape_run" else None
    try:
        result = _final(
            m.id,
            lambda session: settlement.settle(
                session, m.id, side, actor=ACTOR, reason=f"resolved {side} from evidence"
            ),
            lambda: _attempt(m, p, started, AttemptResult.resolved(side), evidence),
            f"settle market {m.id}",
            evidence_run=run_id,
        )
    except _RunWithdrawn:
        # Never resolved on wrong data, and never cancelled for data that may still be good:
        # the next pass decides again from the runs usable then (another in the window, a new
        # scrape, or a cancel once the lag or grace runs out), by the usual rules.
        detail = (
            f"scrape run {run_id} is no longer usable (quarantined after this pass read it):"
            " decided again on the next pass"
        )
        _record_attempt(
            m.id,
            _attempt(
                m, p, started, AttemptResult.DEFERRED, evidence, ErrorCode.STALE_SCRAPE_DATA, detail
            ),
        )
        _release(m.id)
        report.deferred += 1
        log.warning("market=%s not settled: %s", m.id, detail)
        return
    except _OnHold:
        raise
    except Exception as exc:
        log.error("market=%s settlement failed, cancelling: %s", m.id, exc)
        _record_attempt(
            m.id,
            _attempt(
                m, p, started, AttemptResult.ERROR, evidence, ErrorCode.SETTLEMENT_FAILED, str(exc)
            ),
        )
        _cancel(
            m,
            p,
            started,
            ErrorCode.SETTLEMENT_FAILED,
            f"settlement failed: {exc}",
            evidence,
            report,
        )
        return
    if result.applied:
        if side is Side.YES:
            report.resolved_yes += 1
        else:
            report.resolved_no += 1
        log.info("market=%s resolved %s", m.id, side)
    else:
        report.already_final += 1


# -- entry points ---------------------------------------------------------------------------------


def _new_pass(trigger: str) -> _Pass:
    s = get_settings()
    with read_session() as session:
        now = session.execute(text("SELECT now()")).scalar_one()
    return _Pass(
        now=now,
        lag=dt.timedelta(minutes=s.max_scrape_lag_minutes),
        grace=dt.timedelta(minutes=s.resolution_grace_minutes),
        max_age=dt.timedelta(minutes=s.follower_cache_max_age_minutes),
        trigger=trigger,
    )


def _handle(markets: Iterable[DueMarket], p: _Pass, report: SweepReport) -> None:
    for m in markets:
        try:
            _resolve_one(m, p, report)
        except _OnHold:
            # Held after the claim: no attempt, no change; its lease is freed for the release.
            report.held += 1
            _release(m.id)
        except Exception as exc:  # the error boundary: one market never stops the others
            report.errors += 1
            detail = _describe(exc)
            log.exception("market=%s resolution error", m.id)
            now = dt.datetime.now(dt.UTC)
            try:
                if p.now >= m.grace_ends:
                    # An error that outlasts the grace period is not going away: refund.
                    _cancel(
                        m,
                        p,
                        now,
                        ErrorCode.INTERNAL_ERROR,
                        f"resolution kept failing: {detail}",
                        {},
                        report,
                    )
                else:
                    _record_attempt(
                        m.id,
                        _attempt(
                            m, p, now, AttemptResult.ERROR, {}, ErrorCode.INTERNAL_ERROR, detail
                        ),
                    )
                    _release(m.id)
            except Exception:
                log.exception("market=%s could not record its failed attempt", m.id)


def sweep(
    *,
    trigger: str = "schedule",
    batch_size: int = 500,
    max_batches: int = 1000,
    should_stop: Callable[[], bool] | None = None,
) -> SweepReport:
    """Resolve every due market (in leased batches); safe to run in several processes."""
    claimer = f"{_holder(os.getpid())}{trigger}"
    report = SweepReport()
    p = _new_pass(trigger)
    seen: set[int] = set()
    for _ in range(max_batches):
        if should_stop and should_stop():
            break
        batch = _claim(batch_size, claimer, p.grace, skip=seen)
        if not batch:
            break
        seen.update(m.id for m in batch)
        report.claimed += len(batch)
        _gather_snapshots(p, batch)
        _gather_followers(p, batch)
        _handle(batch, p, report)
    # A scrape that raised is in its markets' attempts; here only the runs a scrape recorded.
    report.scrapes = {
        tf: r.run_id for tf, r in p.scraped.items() if isinstance(r, scraper.ScrapeResult)
    }
    return report


def retry_now(market_id: int, *, actor: str) -> SweepReport:
    """Run resolution for one OPEN due market now (the dashboard's "retry resolution")."""
    p = _new_pass(f"operator:{actor}"[:32])
    report = SweepReport()
    markets = _claim(1, f"operator:{actor}", p.grace, market_ids=[market_id])
    if not markets:
        raise ServiceError(
            ErrorCode.MARKET_NOT_OPEN, f"market {market_id} is not an OPEN market past its close"
        )
    report.claimed = 1
    _gather_snapshots(p, markets)
    _gather_followers(p, markets)
    _handle(markets, p, report)
    return report


@dataclass(frozen=True)
class Reevaluation:
    """What the evidence usable now says of a market: an outcome, or why none can be given;
    and the record of the evidence used (as a resolution attempt keeps it)."""

    market_id: int
    decision: outcomes.Decision
    evidence: dict[str, Any]


def reevaluate(market_ids: list[int], *, trigger: str) -> dict[int, Reevaluation]:
    """Decide the markets `market_ids` again now, whatever their status, from the evidence
    usable now (quarantined runs are not), by the rules and the evidence selection of a sweep.
    Reads only: no scrape (the markets' windows are past), no lease, no settlement."""
    p = _new_pass(trigger[:32])
    with read_session() as session:
        markets = _load(session, market_ids, p.grace)
    _gather_snapshots(p, markets, scrape=False)
    _gather_followers(p, markets)
    found: dict[int, Reevaluation] = {}
    for m in markets:
        decision, evidence = _evaluate(m, p)
        found[m.id] = Reevaluation(m.id, decision, evidence)
    return found


def attempts(market_id: int) -> list[dict[str, Any]]:
    """Every resolution attempt of a market with its evidence, newest first."""
    with read_session() as session:
        rows = (
            session.execute(
                text(
                    "SELECT started_at, finished_at, trigger, result, error_code, error_detail,"
                    " evidence FROM resolution_attempts WHERE market_id = :id"
                    " ORDER BY started_at DESC, id DESC"
                ),
                {"id": market_id},
            )
            .mappings()
            .all()
        )
        return [dict(r) for r in rows]
