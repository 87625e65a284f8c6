"""What a quarantine changes, and applying it (PRODUCT.md section 5: "Re-evaluate after a
quarantine").

`preview(run_id)` lists exactly the markets whose ACTIVE settlement rests on the run's evidence:
the latest resolution attempt linked to that settlement (`resolution_attempts.settlement_id`)
read its snapshot. A market re-settled by hand or cancelled since is not listed (its active
settlement rests on no attempt of that run). Each one is decided again now by the resolver's own
evidence selection and outcome rules (`resolver.reevaluate`, which never reads a quarantined
run): it stays, flips, or can no longer be decided (then the honest result is cancel and refund).
The preview shows the evidence used beside the one it replaces and the money each change moves.

`apply` carries the preview out in one reviewed step, each market in its own transaction under
its row lock: a flip is re-settled, an undecidable market cancelled and refunded, a market that
stays is confirmed; each records the resolution attempt that now backs its active settlement
(with the evidence used) and its audit row in that same transaction. A market is touched only if
it is still exactly as previewed (same active settlement, still resting on the run, same
verdict from the evidence usable now, the run still quarantined); otherwise its result says
ALREADY_DONE or STATE_CHANGED and nothing moves. Once applied, no active settlement rests on the
run any more: a second apply, or releasing the run and quarantining it again, finds nothing to
do and never pays twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, aliased

from db import rules
from db.engine import read_session, retrying
from db.models import ResolutionAttempt, ScrapeRun
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.money import settlement
from services.ops import audit, auth, proposals
from services.ops.auth import Principal
from services.resolution import resolver
from services.resolution.outcomes import Undecided
from services.vocabulary import (
    AttemptResult,
    MarketStatus,
    ProposalKind,
    Result,
    Role,
    SettlementKind,
    Side,
    Verdict,
)

ACTION = "apply_reevaluation"
MAX_REASON = 2000
_USABLE = rules.sql(rules.usable_run(aliased(ScrapeRun, name="r")))

# The markets whose active settlement rests on a run: the latest attempt linked to that
# settlement read the run's snapshot.
_IMPACTED = f"""
    SELECT m.id AS market_id, m.type, m.title, m.outcome, s.id AS settlement_id, a.evidence
    FROM settlements s
    JOIN markets m ON m.id = s.market_id
    CROSS JOIN LATERAL (
        SELECT evidence FROM resolution_attempts
        WHERE settlement_id = s.id ORDER BY id DESC LIMIT 1) a
    WHERE s.active AND s.kind = '{SettlementKind.SETTLE}'
      AND a.evidence->>'source' = 'scrape_run' AND a.evidence->>'run_id' = :run
"""


@dataclass(frozen=True)
class Reevaluated:
    """One listed market: what it is, what the evidence usable now says, what that moves."""

    market_id: int
    type: str
    title: str
    settlement_id: int
    outcome: str  # the active settlement's outcome
    verdict: Verdict
    new_outcome: str | None  # FLIPS: the other side; STAYS: the same; UNDECIDABLE: None
    reason_code: str | None  # UNDECIDABLE: why (the resolver's code) and in words
    detail: str | None
    evidence_replaced: dict[str, Any]
    evidence_used: dict[str, Any]
    users_paid: int = 0
    total_paid: Decimal = Decimal(0)
    to_house: Decimal = Decimal(0)
    # Users the reversal would take below zero: user id -> shortfall (re-settle refuses them).
    shortfalls: dict[int, Decimal] = field(default_factory=dict)

    def item(self) -> dict[str, Any]:
        """What a proposal keeps of this market to carry it out later, exactly as previewed."""
        return {
            "market_id": self.market_id,
            "settlement_id": self.settlement_id,
            "verdict": self.verdict.value,
            "new_outcome": self.new_outcome,
            "total_paid": str(self.total_paid),
        }


@dataclass(frozen=True)
class Preview:
    run_id: int
    quarantined: bool
    markets: list[Reevaluated]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for m in self.markets if m.verdict is verdict)

    @property
    def changes(self) -> list[Reevaluated]:
        return [m for m in self.markets if m.verdict is not Verdict.STAYS]

    @property
    def total_paid(self) -> Decimal:
        return sum((m.total_paid for m in self.changes), Decimal(0))


@dataclass(frozen=True)
class MarketResult:
    market_id: int
    verdict: str
    result: Result
    message: str
    total_paid: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "result": self.result.value, "total_paid": str(self.total_paid)}


@dataclass(frozen=True)
class Applied:
    run_id: int
    results: list[MarketResult]
    # Set when the step was above the approval thresholds: nothing was applied yet.
    proposal: proposals.Proposed | None = None

    @property
    def total_paid(self) -> Decimal:
        return sum((r.total_paid for r in self.results), Decimal(0))


def _run(session: Session, run_id: int, *, lock: bool = False) -> bool:
    quarantined = session.execute(
        text("SELECT quarantined FROM scrape_runs WHERE id = :id" + (" FOR SHARE" if lock else "")),
        {"id": run_id},
    ).scalar_one_or_none()
    if quarantined is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no scrape run {run_id}")
    return bool(quarantined)


def impacted(run_id: int) -> list[dict[str, Any]]:
    """The markets whose active settlement rests on run `run_id`'s evidence, by id."""
    with read_session() as session:
        _run(session, run_id)
        rows = session.execute(text(_IMPACTED + " ORDER BY m.id"), {"run": str(run_id)}).mappings()
        return [dict(r) for r in rows]


def _verdict(outcome: str, decision: Side | Undecided) -> tuple[Verdict, str | None]:
    if isinstance(decision, Undecided):
        return Verdict.UNDECIDABLE, None
    return (Verdict.STAYS if decision == outcome else Verdict.FLIPS), decision.value


def preview(run_id: int) -> Preview:
    """Every market whose active settlement rests on `run_id`, decided again from the evidence
    usable now, with the money each change would move. Read-only."""
    with read_session() as session:
        quarantined = _run(session, run_id)
    listed = impacted(run_id)
    decided = resolver.reevaluate([r["market_id"] for r in listed], trigger="reevaluation")
    markets = []
    for row in listed:
        again = decided[row["market_id"]]
        verdict, new_outcome = _verdict(row["outcome"], again.decision)
        money: settlement.SettlementPreview | None = None
        if verdict is Verdict.FLIPS:
            assert new_outcome is not None
            money = settlement.preview_settle(row["market_id"], new_outcome)
        elif verdict is Verdict.UNDECIDABLE:
            money = settlement.preview_refund(row["market_id"])
        undecided = again.decision if isinstance(again.decision, Undecided) else None
        markets.append(
            Reevaluated(
                market_id=row["market_id"],
                type=row["type"],
                title=row["title"],
                settlement_id=row["settlement_id"],
                outcome=row["outcome"],
                verdict=verdict,
                new_outcome=new_outcome,
                reason_code=undecided.code.value if undecided else None,
                detail=undecided.detail if undecided else None,
                evidence_replaced=row["evidence"],
                evidence_used=again.evidence,
                users_paid=money.users_paid if money else 0,
                total_paid=money.total_paid if money else Decimal(0),
                to_house=money.to_house if money else Decimal(0),
                shortfalls=money.shortfalls if money else {},
            )
        )
    return Preview(run_id, quarantined, markets)


def apply(
    principal: Principal | None,
    previewed: Preview,
    reason: str,
    *,
    on_progress: Callable[[int, int, MarketResult], None] | None = None,
) -> Applied:
    """Carry out a reviewed preview: one transaction per market (see the module's doc). Above
    the approval thresholds (markets that change, money paid out) it is recorded as a proposal
    instead and nothing is applied."""
    who = auth.check(principal, Role.OPERATOR, ACTION)
    why = _reason(who, previewed.run_id, reason)
    if not previewed.markets:
        _refused(who, previewed.run_id, why, "nothing to apply: no market rests on this run")
        raise ServiceError(
            ErrorCode.INVALID_INPUT,
            f"no market's settlement rests on run {previewed.run_id}: nothing to apply",
        )
    changes = previewed.changes
    if proposals.needs_approval(len(changes), previewed.total_paid):
        proposed = proposals.propose(
            who,
            ProposalKind.REEVALUATION,
            [{**m.item(), "run_id": previewed.run_id} for m in previewed.markets],
            why,
            amount=previewed.total_paid,
        )
        return Applied(previewed.run_id, [], proposed)
    return carry_out(who, [m.item() for m in previewed.markets], previewed.run_id, why, on_progress)


def carry_out(
    who: Principal,
    items: list[dict[str, Any]],
    run_id: int,
    why: str,
    on_progress: Callable[[int, int, MarketResult], None] | None = None,
) -> Applied:
    """Apply each previewed market (`Reevaluated.item`) in its own transaction; allowed already
    (below the thresholds, or approved)."""
    results = []
    for n, item in enumerate(items, 1):
        result = _apply_one(who, run_id, item, why)
        results.append(result)
        if on_progress is not None:
            on_progress(n, len(items), result)
    return Applied(run_id, results)


def _reason(who: Principal, run_id: int, reason: object) -> str:
    try:
        return free_text(
            reason, what="reason", max_len=MAX_REASON, missing=ErrorCode.REASON_REQUIRED
        )
    except ServiceError as exc:
        _refused(who, run_id, None, exc.message)
        raise


def _refused(who: Principal, run_id: int, reason: str | None, detail: str) -> None:
    audit.record(
        who,
        action=ACTION,
        target_type="scrape_run",
        target_id=str(run_id),
        reason=reason,
        result=Result.REFUSED,
        detail=detail,
    )


class _NotAsPreviewed(Exception):
    def __init__(self, result: Result, message: str) -> None:
        super().__init__(message)
        self.result = result
        self.message = message


def _apply_one(who: Principal, run_id: int, item: dict[str, Any], why: str) -> MarketResult:
    market_id = int(item["market_id"])
    verdict = Verdict(item["verdict"])
    wanted = item["new_outcome"]
    started = dt.datetime.now(dt.UTC)
    # Decided again now (reads only), then checked under the locks against the preview.
    again = resolver.reevaluate([market_id], trigger="reevaluation").get(market_id)

    def audited(session: Session | None, result: Result, detail: str, **extra: Any) -> None:
        audit.record(
            who,
            action=ACTION,
            target_type="market",
            target_id=str(market_id),
            reason=why,
            result=result,
            detail=f"run {run_id}, {verdict}: {detail}"[:4000],
            session=session,
            **extra,
        )

    def unit(session: Session) -> MarketResult:
        # The account may have been deactivated or its session ended since the step began.
        auth.require(session, who, Role.OPERATOR, ACTION)
        status, outcome = session.execute(
            text("SELECT status, outcome FROM markets WHERE id = :m FOR UPDATE"), {"m": market_id}
        ).one()
        before = {"status": status, "outcome": outcome}
        target = (
            (MarketStatus.CANCELLED, None)
            if verdict is Verdict.UNDECIDABLE
            else (MarketStatus.RESOLVED, wanted)
        )
        still = (
            session.execute(
                text(_IMPACTED + " AND s.market_id = :m"), {"run": str(run_id), "m": market_id}
            )
            .mappings()
            .one_or_none()
        )
        if still is None or still["settlement_id"] != item["settlement_id"]:
            if (status, outcome) == target:
                raise _NotAsPreviewed(Result.ALREADY_DONE, f"already {status} {outcome or ''}")
            raise _NotAsPreviewed(
                Result.STATE_CHANGED,
                f"the market changed since the preview (now {status} {outcome or ''}):"
                " preview again",
            )
        if not _run(session, run_id, lock=True):
            raise _NotAsPreviewed(
                Result.STATE_CHANGED, f"run {run_id} was released since the preview: preview again"
            )
        if again is None:
            raise _NotAsPreviewed(Result.STATE_CHANGED, "the market could not be read again")
        now_verdict, now_outcome = _verdict(outcome, again.decision)
        if (now_verdict, now_outcome) != (verdict, wanted):
            raise _NotAsPreviewed(
                Result.STATE_CHANGED,
                f"the evidence changed since the preview: it now {now_verdict}"
                f" {now_outcome or ''}; preview again",
            )
        evidence = {**again.evidence, "replaces_run": run_id, "decided_at": started.isoformat()}
        used_run = evidence.get("run_id") if evidence.get("source") == "scrape_run" else None
        if (
            used_run is not None
            and session.execute(
                text(f"SELECT 1 FROM scrape_runs r WHERE r.id = :id AND {_USABLE} FOR SHARE"),
                {"id": used_run},
            ).first()
            is None
        ):
            raise _NotAsPreviewed(
                Result.STATE_CHANGED, f"run {used_run} became unusable meanwhile: preview again"
            )
        actor = who.username
        if verdict is Verdict.FLIPS:
            done = settlement.resettle(
                session,
                market_id,
                wanted,
                actor=actor,
                reason=why,
                expected_status=MarketStatus.RESOLVED,
            )
            attempt_result, code, detail = AttemptResult.resolved(Side(wanted)), None, None
        elif verdict is Verdict.UNDECIDABLE:
            assert isinstance(again.decision, Undecided)
            code, detail = (
                again.decision.code,
                (f"re-evaluated after run {run_id} was quarantined: {again.decision.detail}"),
            )
            done = settlement.cancel_and_refund(
                session,
                market_id,
                code,
                detail,
                actor=actor,
                expected_status=MarketStatus.RESOLVED,
            )
            attempt_result = AttemptResult.CANCELLED
        else:
            done = None
            attempt_result, code, detail = AttemptResult.resolved(Side(outcome)), None, None
        if done is not None and not done.applied:
            raise _NotAsPreviewed(done.status, done.message)
        session.add(
            ResolutionAttempt(
                market_id=market_id,
                trigger=f"reevaluation:{actor}"[:32],
                started_at=started,
                finished_at=dt.datetime.now(dt.UTC),
                result=attempt_result,
                error_code=code.value if code else None,
                error_detail=detail,
                evidence=evidence,
                settlement_id=done.settlement_id if done else item["settlement_id"],
            )
        )
        after = {"status": target[0], "outcome": target[1]}
        paid = done.total_paid if done else Decimal(0)
        message = {
            Verdict.FLIPS: f"re-settled {wanted}: {paid} paid out",
            Verdict.UNDECIDABLE: f"cancelled ({code}) and refunded: {paid} paid back",
            Verdict.STAYS: f"stays {outcome}, now backed by run {used_run}",
        }[verdict]
        audited(session, Result.OK, message, before=before, after=after)
        return MarketResult(market_id, verdict.value, Result.OK, message, paid)

    try:
        return retrying(unit, what=f"apply re-evaluation to market {market_id}")
    except _NotAsPreviewed as exc:
        audited(None, exc.result, exc.message)
        return MarketResult(market_id, verdict.value, exc.result, exc.message)
    except ServiceError as exc:
        if exc.code not in auth.CALLER_REFUSED:  # `require` has audited its own refusal
            audited(None, Result.REFUSED, f"{exc.code.value}: {exc.message}")
        return MarketResult(market_id, verdict.value, Result.REFUSED, exc.message)
    except Exception as exc:
        audited(None, Result.FAILED, f"{type(exc).__name__}: {exc}")
        return MarketResult(
            market_id, verdict.value, Result.FAILED, f"failed and rolled back: {exc}"
        )
