"""Operator actions on a market, as the dashboard calls them (PRODUCT.md section 5).

Each action re-checks the caller's role, requires a reason, runs as one transaction through the
settlement or resolver service, and writes one audit row with the market's state before and
after. A double click or two operators racing reach the settlement service's row lock: the loser
gets ALREADY_DONE (the market already is where they wanted it) or STATE_CHANGED (it moved
elsewhere), which this module returns as a plain result, audited, never as an error.

An action that changes money writes its audit row inside the settlement's own transaction, so
the change and its record commit together or not at all. Refusals, races and failures change
nothing and are audited in a transaction of their own (kept even though the work rolled back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import literal_column, text
from sqlalchemy.orm import Session

from config import get_settings
from db import rules
from db.engine import read_session, retrying
from db.models import Market
from services import lifecycle
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.lifecycle import MarketState
from services.money import settlement
from services.money.settlement import SettlementResult
from services.ops import audit, auth, proposals
from services.ops.auth import Principal
from services.resolution import resolver
from services.vocabulary import MarketAction, MarketStatus, ProposalKind, Result, Role, Side

MAX_REASON = 2000


@dataclass(frozen=True)
class ActionResult:
    action: str
    market_id: int
    outcome: Result
    message: str  # one plain sentence for the operator
    before: dict[str, Any]
    after: dict[str, Any]
    bets: int = 0
    users_paid: int = 0
    total_paid: Decimal = Decimal(0)

    @property
    def ok(self) -> bool:
        return self.outcome is Result.OK


@dataclass(frozen=True)
class Preview:
    """What an action would do now, for the confirmation dialog. `allowed` is False (with
    `note` saying why) when the action does not apply to the market's current state."""

    action: MarketAction
    market_id: int
    market_status: str
    allowed: bool
    note: str
    bets: int = 0
    users: int = 0
    users_paid: int = 0
    total_paid: Decimal = Decimal(0)
    to_house: Decimal = Decimal(0)
    reverses_settlement_id: int | None = None
    # Users the reversal of the active settlement would take below zero: user id -> shortfall.
    shortfalls: dict[int, Decimal] = field(default_factory=dict)


# -- reading a market's state ---------------------------------------------------------------------


_DUE = rules.sql(rules.due(Market.__table__.c))
_HELD = rules.sql(rules.held(Market.__table__.c))
_RESETTLE_CLOSED = rules.sql(
    rules.resettle_closed(Market.__table__.c, literal_column("make_interval(days => :window)"))
)
_STATE = (
    f"SELECT status, outcome, cancel_reason, {_DUE} AS due, {_HELD} AS held,"
    f" {_RESETTLE_CLOSED} AS resettle_closed FROM markets"
)


def _state_args(market_id: int) -> dict[str, Any]:
    return {"m": market_id, "window": get_settings().resettle_window_days}


def _state(market_id: int) -> dict[str, Any]:
    with read_session() as s:
        row = (
            s.execute(text(f"{_STATE} WHERE id = :m"), _state_args(market_id))
            .mappings()
            .one_or_none()
        )
    if row is None:
        raise ServiceError(
            ErrorCode.UNKNOWN_MARKET, f"market {market_id} does not exist", market_id=market_id
        )
    return dict(row)


def _audit_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state[k] for k in ("status", "outcome", "cancel_reason")}


def _market_state(state: dict[str, Any]) -> MarketState:
    return MarketState.of(
        state["status"], state["outcome"], state["due"], state["held"], state["resettle_closed"]
    )


def _amount(value: Decimal) -> str:
    """Money for a sentence: exact, but without trailing zeros beyond the cents."""
    cents = value.quantize(Decimal("0.01"))
    return f"{cents:,}" if cents == value else f"{value.normalize():,}"


def _describe(state: dict[str, Any]) -> str:
    if state["status"] == MarketStatus.RESOLVED:
        return f"resolved {state['outcome']}"
    if state["status"] == MarketStatus.CANCELLED:
        return f"cancelled ({state['cancel_reason']})"
    return "open, on hold" if state.get("held") else "open"


# -- what every action shares ----------------------------------------------------------------------


def _reason(principal: Principal, action: str, market_id: int, reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        _refused(principal, action, market_id, None, "no reason given")
        raise ServiceError(ErrorCode.REASON_REQUIRED, "a reason is required for this action")
    if len(reason.strip()) > MAX_REASON:
        _refused(principal, action, market_id, None, "reason too long")
        raise ServiceError(ErrorCode.INVALID_INPUT, f"a reason has at most {MAX_REASON} characters")
    try:
        return free_text(reason, what="reason", max_len=MAX_REASON)
    except ServiceError as exc:  # a NUL character
        _refused(principal, action, market_id, None, exc.message)
        raise


def _refused(
    principal: Principal, action: str, market_id: int, reason: str | None, detail: str
) -> None:
    audit.record(
        principal,
        action=action,
        target_type="market",
        target_id=str(market_id),
        reason=reason,
        result=Result.REFUSED,
        detail=detail[:4000],
    )


@dataclass(frozen=True)
class _Call:
    """One action under way: who asked, what for, why, and the market's state as it began."""

    who: Principal
    action: str
    market_id: int
    why: str
    before: dict[str, Any]

    @classmethod
    def start(
        cls, principal: Principal | None, action: str, market_id: int, reason: object
    ) -> _Call:
        """Check the caller and the reason (refusals are audited), then read the market. The
        caller is checked again inside the action's own transaction (see `run`)."""
        who = auth.check(principal, Role.OPERATOR, action)
        why = _reason(who, action, market_id, reason)
        return cls(who, action, market_id, why, _state(market_id))

    def refused(self, detail: str) -> None:
        _refused(self.who, self.action, self.market_id, self.why, detail)

    def gate(
        self,
        kind: ProposalKind,
        item: dict[str, Any],
        movement: Callable[[], settlement.SettlementPreview],
        side: Side | None = None,
    ) -> ActionResult | None:
        """Above the approval thresholds, record the action as a proposal (the market is not
        touched) and say so; None when the action may go ahead now, or when it cannot apply
        (the market is no longer as the operator saw it, or the action does not fit its state):
        carrying it out then refuses it or says ALREADY_DONE or STATE_CHANGED, as it would."""
        action = MarketAction.RESETTLE if kind is ProposalKind.RESETTLE else MarketAction.CANCEL
        if item["expected_status"] != self.before["status"]:
            return None
        if lifecycle.refusal(action, _market_state(self.before), side) is not None:
            return None
        amount = movement().total_paid
        if not proposals.needs_approval(1, amount):
            return None
        proposed = proposals.propose(self.who, kind, [item], self.why, amount=amount)
        return self.conclude(self.before, Result.PROPOSED, proposed.message, proposed.message)

    def run(
        self, work: Callable[[Session], SettlementResult], after: dict[str, Any]
    ) -> SettlementResult:
        """Run `work` and, if it applied, its OK audit row (with the market's state `after`) in
        one transaction, so the change and its record commit together or not at all. A refusal
        or a failure of the service is audited on its own and raised again."""

        def unit(session: Session) -> SettlementResult:
            # The account may have been deactivated or its session ended since `start`.
            auth.require(session, self.who, Role.OPERATOR, self.action)
            result = work(session)
            if result.applied:
                self._audit(
                    Result.OK, None, before=_audit_state(self.before), after=after, session=session
                )
            return result

        try:
            return retrying(unit, what=f"{self.action} market {self.market_id}")
        except ServiceError as exc:
            if exc.code not in auth.CALLER_REFUSED:  # `require` has audited its own refusal
                self.refused(f"{exc.code.value}: {exc.message}")
            raise
        except Exception as exc:
            self._audit(
                Result.FAILED, f"{type(exc).__name__}: {exc}", before=_audit_state(self.before)
            )
            raise

    def settled(self, result: SettlementResult, done_message: str) -> ActionResult:
        """The settlement service's result in the operator's words."""
        after = _state(self.market_id)
        if result.applied:
            # Its audit row was committed with the change (see `run`).
            return self._result(Result.OK, done_message, after, result)
        if result.status is Result.ALREADY_DONE:
            outcome = Result.ALREADY_DONE
            message = f"Already {_describe(after)} — nothing changed."
        else:
            outcome = Result.STATE_CHANGED
            message = (
                f"The market changed in the meantime (it is now {_describe(after)})"
                " — nothing was done. Look at it again before acting."
            )
        return self.conclude(after, outcome, message, result.message, result)

    def already(self) -> ActionResult:
        after = _state(self.market_id)
        message = f"Already {_describe(after)} — nothing changed."
        return self.conclude(after, Result.ALREADY_DONE, message, message)

    def conclude(
        self,
        after: dict[str, Any],
        outcome: Result,
        message: str,
        detail: str,
        result: SettlementResult | None = None,
    ) -> ActionResult:
        """Audit how the action ended, with the market's state before and after."""
        self._audit(outcome, detail, before=_audit_state(self.before), after=_audit_state(after))
        return self._result(outcome, message, after, result)

    def _audit(self, result: Result, detail: str | None, **extra: Any) -> None:
        audit.record(
            self.who,
            action=self.action,
            target_type="market",
            target_id=str(self.market_id),
            reason=self.why,
            result=result,
            detail=None if detail is None else detail[:4000],
            **extra,
        )

    def _result(
        self,
        outcome: Result,
        message: str,
        after: dict[str, Any],
        result: SettlementResult | None,
    ) -> ActionResult:
        return ActionResult(
            self.action,
            self.market_id,
            outcome,
            message,
            _audit_state(self.before),
            _audit_state(after),
            bets=result.bets if result else 0,
            users_paid=result.users_paid if result else 0,
            total_paid=result.total_paid if result else Decimal(0),
        )


# -- the actions ----------------------------------------------------------------------------------


def cancel_and_refund(
    principal: Principal | None, market_id: int, reason: str, *, expected_status: str
) -> ActionResult:
    """Cancel an OPEN or RESOLVED market and refund every bet (OPERATOR_CANCELLED).
    `expected_status` is the status the operator saw: if the market moved since, nothing is
    done and the result says so. Above the approval thresholds it becomes a proposal."""
    call = _Call.start(principal, "cancel_and_refund", market_id, reason)
    item = {"market_id": market_id, "expected_status": str(expected_status)}
    gated = call.gate(ProposalKind.CANCEL, item, lambda: settlement.preview_refund(market_id))
    return gated or _cancel(call, expected_status)


def carry_out_cancel(
    principal: Principal | None, market_id: int, reason: str, *, expected_status: str
) -> ActionResult:
    """`cancel_and_refund` for a step already past the approval gate as a whole (a bulk step
    below the thresholds, or an approved proposal): the same checks, audit and transaction."""
    return _cancel(_Call.start(principal, "cancel_and_refund", market_id, reason), expected_status)


def _cancel(call: _Call, expected_status: str) -> ActionResult:
    result = call.run(
        lambda session: settlement.cancel_and_refund(
            session,
            call.market_id,
            ErrorCode.OPERATOR_CANCELLED,
            call.why,
            actor=call.who.username,
            expected_status=expected_status,
        ),
        after={
            "status": MarketStatus.CANCELLED,
            "outcome": None,
            "cancel_reason": ErrorCode.OPERATOR_CANCELLED,
        },
    )
    return call.settled(
        result,
        f"Cancelled and refunded {result.bets} bets: {result.users_paid} users got"
        f" {_amount(result.total_paid)} back.",
    )


def resettle(
    principal: Principal | None,
    market_id: int,
    outcome: str,
    reason: str,
    *,
    expected_status: str,
) -> ActionResult:
    """Reverse the active settlement of a RESOLVED or CANCELLED market and settle it `outcome`.
    A reversal that would take any user below zero is refused (NEGATIVE_BALANCE, with the
    shortfalls) and changes nothing. Above the approval thresholds it becomes a proposal."""
    call = _Call.start(principal, "resettle", market_id, reason)
    item = {"market_id": market_id, "outcome": outcome, "expected_status": str(expected_status)}
    gated = call.gate(
        ProposalKind.RESETTLE,
        item,
        lambda: settlement.preview_settle(market_id, outcome),
        Side(outcome) if outcome in tuple(Side) else None,
    )
    return gated or _resettle(call, outcome, expected_status)


def carry_out_resettle(
    principal: Principal | None, market_id: int, outcome: str, reason: str, *, expected_status: str
) -> ActionResult:
    """`resettle` for an approved proposal: the same checks, audit and transaction."""
    return _resettle(
        _Call.start(principal, "resettle", market_id, reason), outcome, expected_status
    )


def _resettle(call: _Call, outcome: str, expected_status: str) -> ActionResult:
    result = call.run(
        lambda session: settlement.resettle(
            session,
            call.market_id,
            outcome,
            actor=call.who.username,
            reason=call.why,
            expected_status=expected_status,
        ),
        after={"status": MarketStatus.RESOLVED, "outcome": outcome, "cancel_reason": None},
    )
    return call.settled(
        result,
        f"Re-settled {outcome}: {result.bets} bets rewritten, {result.users_paid} users paid"
        f" {_amount(result.total_paid)}.",
    )


def retry_resolution(principal: Principal | None, market_id: int, reason: str) -> ActionResult:
    """Run the resolver on one OPEN market past its close now. The resolver decides: it may
    resolve, cancel, or defer the market again (the attempt is recorded either way)."""
    call = _Call.start(principal, "retry_resolution", market_id, reason)
    if call.before["status"] != MarketStatus.OPEN:
        return call.already()
    why = lifecycle.refusal(MarketAction.RETRY, _market_state(call.before))
    if why is not None:
        call.refused(why)
        raise ServiceError(ErrorCode.MARKET_NOT_OPEN, f"market {market_id}: {why}")
    try:
        report = resolver.retry_now(market_id, actor=call.who.username)
    except ServiceError as exc:
        # Another caller took the market's lock and finished it first.
        if (
            exc.code is ErrorCode.MARKET_NOT_OPEN
            and _state(market_id)["status"] != MarketStatus.OPEN
        ):
            return call.already()
        call.refused(f"{exc.code.value}: {exc.message}")
        raise
    if report.already_final:
        return call.already()
    after = _state(market_id)
    latest = resolver.attempts(market_id)[:1]
    attempt = latest[0] if latest else {}
    if after["status"] == MarketStatus.OPEN:
        message = (
            f"Still open: the resolver deferred it ({attempt.get('error_code')}:"
            f" {attempt.get('error_detail')}). It will try again on the next pass."
        )
    else:
        message = f"Resolution ran: the market is now {_describe(after)}."
    return call.conclude(
        after, Result.OK, message, f"{report.counts()}; attempt {attempt.get('result')}"
    )


def hold(principal: Principal | None, market_id: int, reason: str) -> ActionResult:
    """Put an OPEN market on hold while it is investigated: bets are refused, the resolver
    leaves it alone and its grace period stops running (`db.rules.held`, `grace_ends`). It can
    still be cancelled and refunded. Holding a held market is refused and changes nothing."""
    return _set_hold(principal, market_id, reason, MarketAction.HOLD)


def release_hold(principal: Principal | None, market_id: int, reason: str) -> ActionResult:
    """Release a market's hold: normal resolution again, its grace period extended by the time
    it was held after its close. Releasing a market not on hold is refused."""
    return _set_hold(principal, market_id, reason, MarketAction.RELEASE)


_HOLD_SQL = {
    MarketAction.HOLD: "held_at = now(), held_by = :who, hold_reason = :why",
    MarketAction.RELEASE: (
        f"held_for = held_for + {rules.sql(rules.held_after_close(Market.__table__.c))},"
        " held_at = NULL, held_by = NULL, hold_reason = NULL"
    ),
}
_HOLD_NOTES = {
    MarketAction.HOLD: "Bets are refused and the resolver leaves the market alone until the hold"
    " is released; its grace period stops running. It can still be cancelled and refunded.",
    MarketAction.RELEASE: "The market returns to normal resolution; its grace period is extended"
    " by the time it was held after its close.",
}


def _set_hold(
    principal: Principal | None, market_id: int, reason: str, what: MarketAction
) -> ActionResult:
    name = "hold_market" if what is MarketAction.HOLD else "release_hold"
    call = _Call.start(principal, name, market_id, reason)

    def unit(session: Session) -> dict[str, Any] | str:
        # Under the row lock the resolver's settlement and bet placement also take.
        now = (
            session.execute(text(f"{_STATE} WHERE id = :m FOR UPDATE"), _state_args(market_id))
            .mappings()
            .one()
        )
        why = lifecycle.refusal(what, _market_state(dict(now)))
        if why is not None:
            return why
        session.execute(
            text(f"UPDATE markets SET {_HOLD_SQL[what]} WHERE id = :m"),
            {"m": market_id, "who": call.who.username, "why": call.why},
        )
        before = {**_audit_state(dict(now)), "held": now["held"]}
        after = {**before, "held": what is MarketAction.HOLD}
        call._audit(Result.OK, None, before=before, after=after, session=session)
        return after

    done = retrying(unit, what=f"{name} market {market_id}")
    if isinstance(done, str):
        call.refused(done)
        raise ServiceError(ErrorCode.STATE_CHANGED, f"market {market_id}: {done} Nothing changed.")
    message = (
        "On hold: no bets, no automatic resolution, the grace period stopped."
        if what is MarketAction.HOLD
        else "Hold released: the market is resolved normally again."
    )
    return call._result(Result.OK, message, _state(market_id), None)


# -- previews -------------------------------------------------------------------------------------


def preview(market_id: int, action: str, outcome: str | None = None) -> Preview:
    """What `action` ('cancel', 'resettle' with `outcome`, 'retry') would do to the market now.
    Read-only; the numbers hold unless someone trades or acts on the market in between."""
    try:
        what = MarketAction(action)
    except ValueError:
        raise ServiceError(
            ErrorCode.INVALID_INPUT, f"action must be one of {', '.join(MarketAction)}"
        ) from None
    if what is MarketAction.RESETTLE and outcome not in tuple(Side):
        raise ServiceError(ErrorCode.INVALID_INPUT, "re-settle needs an outcome YES or NO")
    side = Side(outcome) if what is MarketAction.RESETTLE and outcome else None
    state = _state(market_id)
    status = state["status"]
    why = lifecycle.refusal(what, _market_state(state), side)
    if why is not None:
        return Preview(what, market_id, status, False, why)
    if what in _HOLD_NOTES:
        return Preview(what, market_id, status, True, _HOLD_NOTES[what])
    if what is MarketAction.RETRY:
        p = settlement.preview_refund(market_id)
        return Preview(
            what,
            market_id,
            status,
            True,
            "Runs the resolver on this market now: it resolves it if the evidence is usable,"
            " otherwise defers it or cancels and refunds it under the usual rules.",
            bets=p.bets,
            users=p.users,
        )
    if what is MarketAction.CANCEL:
        p = settlement.preview_refund(market_id)
        note = (
            "Reverses the settlement, then refunds every bet."
            if status == MarketStatus.RESOLVED
            else "Cancels the market and refunds every bet."
        )
    else:
        assert side is not None
        p = settlement.preview_settle(market_id, side)
        note = f"Reverses the current settlement, then pays {side} holders."
    if p.shortfalls:
        note += " Refused while any user would go below zero (see shortfalls)."
    return Preview(
        what,
        market_id,
        status,
        not p.shortfalls,
        note,
        bets=p.bets,
        users=p.users,
        users_paid=p.users_paid,
        total_paid=p.total_paid,
        to_house=p.to_house,
        reverses_settlement_id=p.reverses_settlement_id,
        shortfalls=p.shortfalls,
    )
