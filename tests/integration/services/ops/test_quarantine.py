"""The analyst's action on a scrape run: quarantine and release, previewed, audited, refused
without a role or a reason; a quarantined run is no longer used."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg
import pytest
from sqlalchemy import text

from db.engine import transaction
from services.errors import ErrorCode, ServiceError
from services.ops import audit
from services.ops import quarantine as quarantine_ops
from services.ops.auth import Principal
from services.resolution import resolver
from services.views import kols as kol_views
from tests.support import accounts
from tests.support.accounts import principal
from tests.support.factories import new_market
from tests.support.scrape_data import NOW, board, fund_house, kol, scrape_run
from tests.support.settling import checkpoint

ANALYST = Principal("ana", "analyst")
VIEWER = Principal("vic", "viewer")


@pytest.fixture(autouse=True)
def _accounts(db: str) -> None:
    """The services check every caller against its account: these principals' accounts exist."""
    accounts.ensure(ANALYST, VIEWER)


def _quarantine_state(run_id: int) -> tuple[bool, str | None, str | None]:
    with transaction() as s:
        row = s.execute(
            text(
                "SELECT quarantined, quarantine_reason, quarantined_by FROM scrape_runs"
                " WHERE id = :id"
            ),
            {"id": run_id},
        ).one()
    return row.quarantined, row.quarantine_reason, row.quarantined_by


def test_analyst_quarantines_and_releases_a_run_audited(db: str) -> None:
    older = scrape_run(db, "daily", NOW - dt.timedelta(hours=2), board(3))
    newer = scrape_run(db, "daily", NOW - dt.timedelta(hours=1), board(4))
    assert quarantine_ops.quarantine_preview(newer).rows_stored == 4

    result = quarantine_ops.set_quarantine(ANALYST, newer, True, "  ranks look shifted  ")
    assert result.applied
    assert _quarantine_state(newer) == (True, "ranks look shifted", "ana")
    snap = kol_views.latest_snapshot("daily")
    assert snap.run is not None and snap.run.id == older  # the quarantined run is not used
    entry = audit.recent(action="quarantine_scrape_run")[0]
    assert (entry["username"], entry["result"], entry["target"]) == (
        "ana",
        "OK",
        f"scrape_run:{newer}",
    )
    assert entry["reason"] == "ranks look shifted"
    assert entry["before"]["quarantined"] is False and entry["after"]["quarantined"] is True

    # A second click changes nothing and says so.
    again = quarantine_ops.set_quarantine(ANALYST, newer, True, "double click")
    assert not again.applied
    assert _quarantine_state(newer) == (True, "ranks look shifted", "ana")

    released = quarantine_ops.set_quarantine(principal("ops", "operator"), newer, False, "checked")
    assert released.applied and _quarantine_state(newer)[0] is False
    assert audit.recent(action="release_scrape_run")[0]["after"]["quarantined"] is False


def test_quarantine_refusals_change_nothing_and_are_audited(db: str) -> None:
    run_id = scrape_run(db, "daily", NOW, board(2))
    with pytest.raises(ServiceError) as err:
        quarantine_ops.set_quarantine(VIEWER, run_id, True, "I think so")
    assert err.value.code == ErrorCode.PERMISSION_DENIED
    refused = audit.recent(action="quarantine_scrape_run")[0]
    assert (refused["username"], refused["result"]) == ("vic", "REFUSED")

    with pytest.raises(ServiceError) as err:
        quarantine_ops.set_quarantine(None, run_id, True, "anon")
    assert err.value.code == ErrorCode.NOT_AUTHENTICATED

    for blank in ("", "   "):
        with pytest.raises(ServiceError) as err:
            quarantine_ops.set_quarantine(ANALYST, run_id, True, blank)
        assert err.value.code == ErrorCode.REASON_REQUIRED
    assert audit.recent(action="quarantine_scrape_run")[0]["detail"] == (
        "a non-empty reason is required"
    )

    with pytest.raises(ServiceError) as err:
        quarantine_ops.set_quarantine(ANALYST, run_id + 999, True, "gone")
    assert err.value.code == ErrorCode.NOT_FOUND
    assert _quarantine_state(run_id) == (False, None, None)


def _waiting_on_a_lock(db: str) -> bool:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
            " AND query ILIKE '%scrape_runs%'"
        ).fetchone()
    return bool(row and row[0])


def test_a_quarantine_waits_for_a_settlement_in_flight_from_that_run(db: str) -> None:
    """The settlement holds the run it decided from under a share lock until it commits: the
    quarantine waits for it (and any settlement after the quarantine sees it)."""
    fund_house()
    kol_id = kol("A", "W001", None)
    run_id = scrape_run(db, "daily", NOW, board(3))
    with transaction() as s:
        market_id = new_market(
            s,
            kol_a_id=kol_id,
            opens_at=NOW - dt.timedelta(hours=1),
            closes_at=NOW - dt.timedelta(minutes=1),
        )
    quarantined: list[quarantine_ops.QuarantineResult] = []
    analyst = threading.Thread(
        target=lambda: quarantined.append(
            quarantine_ops.set_quarantine(ANALYST, run_id, True, "ranks shifted")
        )
    )
    blocked: list[bool] = []

    def mid_settlement(step: str) -> None:
        if step != "before_commit" or blocked:
            return
        analyst.start()
        deadline = time.monotonic() + 5
        while analyst.is_alive() and not _waiting_on_a_lock(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        blocked.append(analyst.is_alive() and _waiting_on_a_lock(db))

    with checkpoint(mid_settlement):
        report = resolver.sweep()
    analyst.join(timeout=10)

    assert blocked == [True], "the quarantine did not wait for the settlement in flight"
    assert report.resolved_yes == 1
    assert quarantined and quarantined[0].applied
    assert _quarantine_state(run_id)[0] is True
    with transaction() as s:
        resolved_at, quarantined_at = s.execute(
            text(
                "SELECT m.resolved_at, r.quarantined_at FROM markets m, scrape_runs r"
                " WHERE m.id = :m AND r.id = :r"
            ),
            {"m": market_id, "r": run_id},
        ).one()
    assert quarantined_at > resolved_at
