"""The KOL data, freshness, scrapes, jobs, ledger and accounts pages through Streamlit's AppTest,
on the real database with planted data, for each role."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import streamlit as st
from PIL import Image
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from config import get_settings
from db.engine import transaction
from pages.ui import page_file
from services.money import users
from services.ops import audit, auth, jobs, retention
from services.ops.auth import Principal
from services.ops.retention_policy import REMOVED
from services.vocabulary import JobStatus, MarketType, Timeframe
from standins.xapi_standin import user_id
from tests.support.factories import new_market
from tests.support.pages import dashboard_app

EVIL = "<img src=x onerror=alert(1)>**bold**"
PAGES = ["kol_data", "freshness", "scrapes", "jobs", "ledger"]


@pytest.fixture()
def planted(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Two daily runs (the latest with a hostile KOL name, a rank jump and a reject), a failed
    run with its saved page and screenshot, a stale follower market, a due market without data,
    job runs, deposits."""
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    st.cache_data.clear()
    now = dt.datetime.now(dt.UTC)
    folder = tmp_path / "scrapes"
    folder.mkdir()
    with psycopg.connect(db) as conn:

        def run(snapshot_at: dt.datetime | None, status: str, **extra: object) -> int:
            cols = ", ".join(
                [
                    "timeframe",
                    "trigger",
                    "source_url",
                    "started_at",
                    "snapshot_at",
                    "status",
                    *extra,
                ]
            )
            marks = ", ".join(["%s"] * (6 + len(extra)))
            row = conn.execute(
                f"INSERT INTO scrape_runs ({cols}) VALUES ({marks}) RETURNING id",
                (
                    "daily",
                    "SCHEDULE",
                    "http://127.0.0.1/lb",
                    snapshot_at or now,
                    snapshot_at,
                    status,
                    *extra.values(),
                ),
            ).fetchone()
            assert row
            return int(row[0])

        def rows(run_id: int, board: list[tuple[int, str, str, str | None]]) -> None:
            for rank, name, wallet, handle in board:
                conn.execute(
                    "INSERT INTO scraped_kols (run_id, rank, username, wallet, x_handle, wins,"
                    " losses, sol_gain, usd_gain, timeframe, scraped_at) VALUES"
                    " (%s, %s, %s, %s, %s, 3, 1, 1.5, 200, 'daily', now())",
                    (run_id, rank, name, wallet, handle),
                )

        board = [(i, f"kol{i}", f"W{i:02d}", f"h{i}") for i in range(1, 16)]
        rows(run(now - dt.timedelta(hours=2), "SUCCESS", rows_stored=15), board)
        latest = run(now - dt.timedelta(hours=1), "PARTIAL", rows_stored=15, rows_rejected=1)
        rows(latest, [(1, EVIL, "W15", None), *[(r + 1, n, w, h) for r, n, w, h in board[:14]]])
        conn.execute(
            "INSERT INTO scrape_rejects (run_id, position, raw, reason_code, reason)"
            " VALUES (%s, 16, %s, 'PARSE_BAD_NUMBER', 'bad gain')",
            (latest, json.dumps({"name": EVIL, "sol": "1..2"})),
        )
        failed = run(
            None,
            "FAILED",
            error_code="SCRAPE_LAYOUT_CHANGED",
            error_message="no rows matched",
            html_path=str(folder / "f.html"),
            screenshot_path=str(folder / "f.png"),
        )
        for wallet, name, handle in (("WF", "Fol", "fol"),):
            conn.execute(
                "INSERT INTO kols (display_name, wallet, x_handle) VALUES (%s, %s, %s)",
                (name, wallet, handle),
            )
        conn.execute(
            "INSERT INTO kols (display_name, wallet, x_handle)"
            " SELECT DISTINCT ON (wallet) username, wallet, x_handle FROM scraped_kols"
            " ORDER BY wallet, run_id DESC"
        )
        conn.execute(
            "INSERT INTO follower_cache (handle, x_user_id, followers, fetched_at)"
            " VALUES ('fol', %s, 500, now() - interval '3 days')",
            (user_id("fol"),),
        )
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, started_at, finished_at, status, error) VALUES"
            " ('integrity', 'h', 1, now() - interval '1 minute', now(), 'SUCCESS', NULL),"
            " ('scrape_daily', 'h', 1, now() - interval '2 minutes', now(), 'FAILED',"
            "  'scrape run failed: SCRAPE_LAYOUT_CHANGED')"
        )
        conn.execute(
            "INSERT INTO scheduler_instances (id, host, pid, is_leader) VALUES ('h:1:x', 'h', 1,"
            " true)"
        )
    (folder / "f.html").write_text(f"<html><body>{EVIL}</body></html>")
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    (folder / "f.png").write_bytes(png.getvalue())

    with transaction() as s:
        users.fund_house(s, Decimal("10000"), key="house", actor="test")
        kol = s.execute(text("SELECT id FROM kols WHERE wallet = 'WF'")).scalar_one()
        follower = new_market(
            s,
            kol_a_id=kol,
            type=MarketType.FOLLOWER_GROWTH,
            title=EVIL,
            timeframe=None,
            threshold=Decimal(10),
            baseline={"a": {"followers": 500, "x_user_id": user_id("fol"), "x_handle": "fol"}},
            opens_at=now - dt.timedelta(days=1),
            closes_at=now + dt.timedelta(days=1),
        )
        due = new_market(
            s,
            kol_a_id=kol,
            title="due",
            timeframe=Timeframe.WEEKLY,
            baseline={"a": {"rank": 1}},
            opens_at=now - dt.timedelta(days=1),
            closes_at=now - dt.timedelta(minutes=5),
        )
    users.register("alice", Decimal("50"), actor="test")
    yield {"latest": latest, "failed": failed, "follower": follower, "due": due}
    st.cache_data.clear()
    get_settings.cache_clear()


def _open(page: str, who: Principal) -> AppTest:
    at = dashboard_app(who)
    at.run()
    at.switch_page(page_file(page))
    return at.run()


def _shown_as_markdown(at: AppTest) -> str:
    """Everything the page rendered through markdown (where HTML or markup could act)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.error, *at.warning, *at.info, *at.success)]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role", ["viewer", "analyst"])
def test_each_page_renders_for_each_role_and_never_renders_scraped_text(
    planted: dict[str, int], page: str, role: str
) -> None:
    at = _open(page, Principal("someone", role))
    assert not at.exception, at.exception
    assert at.title[0].value
    assert "onerror" not in _shown_as_markdown(at)


def test_kol_data_shows_the_snapshot_changes_and_anomalies(planted: dict[str, int]) -> None:
    at = _open("kol_data", Principal("vic", "viewer"))
    snapshot = at.dataframe[0].value
    assert list(snapshot["username"][:2]) == [EVIL, "kol1"]  # shown as data, not markup
    assert f"Run {planted['latest']} (PARTIAL)" in at.caption[0].value
    subheaders = [s.value for s in at.subheader]
    assert "Rank jumps: 1" in subheaders  # W15 went from 15th to 1st
    assert "Missing X handles: 1" in subheaders and "Rejected rows: 1" in subheaders
    at.text_input(key="kol_find").input("kol1").run()
    assert not at.exception
    assert at.selectbox(key="kol_pick").value["wallet"] == "W01"
    assert len(at.get("vega_lite_chart")) >= 2  # rank and gains over time


def test_freshness_warns_about_the_stale_cache_and_the_due_market(
    planted: dict[str, int],
) -> None:
    at = _open("freshness", Principal("vic", "viewer"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Stale"] == "1" and metrics["Fresh"] == "0"
    assert any("1 open follower markets have no usable cached count" in w.value for w in at.warning)
    assert any("1 due markets lack usable data" in e.value for e in at.error)
    at_risk = at.dataframe[-1].value
    assert list(at_risk["market_id"]) == [planted["due"]]
    assert list(at_risk["code"]) == ["STALE_SCRAPE_DATA"]


def test_scrapes_shows_the_failure_with_its_saved_page(planted: dict[str, int]) -> None:
    at = _open("scrapes", Principal("vic", "viewer"))
    assert at.selectbox(key="scr_run").value == planted["failed"]
    assert [e.value for e in at.error] == ["This run failed:"]
    assert "SCRAPE_LAYOUT_CHANGED: no rows matched" in [c.value for c in at.code]
    assert any(EVIL in c.value for c in at.code)  # the saved HTML, as text
    assert len(at.get("image")) == 1  # the screenshot
    assert not [b for b in at.button if b.key == "scr_open"]  # viewers cannot quarantine


def _quarantined(run_id: int) -> bool:
    with transaction() as s:
        return bool(
            s.execute(
                text("SELECT quarantined FROM scrape_runs WHERE id = :id"), {"id": run_id}
            ).scalar_one()
        )


def test_analyst_quarantines_through_the_dialog_with_a_reason(planted: dict[str, int]) -> None:
    at = _open("scrapes", Principal("ana", "analyst"))
    latest = planted["latest"]
    at.selectbox(key="scr_run").set_value(latest).run()
    at.button(key="scr_open").click().run()
    assert "the resolver will no longer use its 15 rows" in " ".join(m.value for m in at.markdown)
    at.button(key="scr_confirm").click().run()  # no reason yet
    assert any("REASON_REQUIRED" in e.value for e in at.error)
    assert not _quarantined(latest)

    at.text_area(key="scr_reason").input("ranks shifted by one").run()
    at.button(key="scr_confirm").click().run()
    assert not at.exception
    assert _quarantined(latest)
    assert [s.value for s in at.success] == [f"Run {latest} quarantined."]
    entry = audit.recent(action="quarantine_scrape_run")[0]
    assert (entry["username"], entry["result"], entry["reason"]) == (
        "ana",
        "OK",
        "ranks shifted by one",
    )
    assert not [b for b in at.button if b.key == "scr_confirm"]  # the dialog closed
    assert at.selectbox(key="scr_run").value == latest
    assert any(w.value == "Quarantined: the resolver does not use this run." for w in at.warning)


def test_jobs_page_shows_schedule_failures_and_heartbeat(planted: dict[str, int]) -> None:
    at = _open("jobs", Principal("vic", "viewer"))
    assert at.success[0].value.startswith("Scheduler leader alive")
    schedule = at.dataframe[0].value.set_index("job")
    assert schedule.loc["scrape_daily", "last_status"] == "FAILED"
    assert schedule.loc["scrape_daily", "failures"] == 1
    assert schedule.loc["integrity", "last_status"] == "SUCCESS"
    at.toggle(key="jobs_failed").set_value(True).run()
    assert list(at.dataframe[-1].value["job"]) == ["scrape_daily"]


def test_jobs_page_shows_retention_policy_last_run_and_disk(planted: dict[str, int]) -> None:
    at = _open("jobs", Principal("vic", "viewer"))
    assert "Retention has not run yet." in [i.value for i in at.info]
    run_id = jobs.start_run("retention")
    report = retention.run()
    jobs.finish_run(
        "retention",
        run_id,
        status=JobStatus.SUCCESS,
        counts=report.counts(),
        error=None,
        took_s=0.1,
    )
    st.cache_data.clear()
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Database on disk"].endswith("MB")
    assert metrics["Failure artifacts on disk"].endswith("kB") or metrics[
        "Failure artifacts on disk"
    ].endswith(" B")
    assert any(s.value.startswith("Last retention run") for s in at.success)
    removed = next(d.value for d in at.dataframe if list(d.value.columns) == ["removed", "count"])
    assert list(removed["removed"]) == list(REMOVED.values())
    policy = next(d.value for d in at.dataframe if list(d.value.columns) == ["what", "kept"])
    assert "Follower history" in set(policy["what"])
    tables = next(d.value for d in at.dataframe if "rows (estimate)" in d.value.columns)
    assert "scraped_kols" in set(tables["table"])


def test_ledger_page_runs_the_integrity_check(planted: dict[str, int]) -> None:
    at = _open("ledger", Principal("vic", "viewer"))
    assert at.success[0].value.startswith("Last periodic check")
    assert (
        at.info[0].value
        == "Last full audit (every invariant over every row, nightly): not run yet."
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["USER (1)"] == "50.00" and metrics["ESCROW (2)"] == "200.00"
    at.button(key="ledger_check").click().run()
    assert any(s.value.startswith("Integrity clean") for s in at.success)
    at.selectbox(key="ledger_kind").set_value("DEPOSIT").run()
    assert set(at.dataframe[0].value["kind"]) == {"DEPOSIT"}


def test_accounts_page_is_for_admins_who_create_and_deactivate(planted: dict[str, int]) -> None:
    auth.create_account("root", "admin password 1", "admin")
    at = _open("accounts", Principal("root", "admin"))
    assert not at.exception
    at.text_input[0].input("newbie")
    at.selectbox[0].set_value("analyst")
    at.text_input[1].input("a long password")
    at.button[0].click().run()
    assert [s.value for s in at.success] == ["Account newbie (analyst) created."]
    assert auth.log_in("newbie", "a long password", None)[0].role == "analyst"
    at.selectbox(key="accounts_pick").set_value("newbie").run()
    at.button(key="accounts_toggle").click().run()
    assert [s.value for s in at.success] == ["Account newbie deactivated."]
    assert [
        a["active"]
        for a in auth.list_accounts(actor=Principal("root", "admin"))
        if a["username"] == "newbie"
    ] == [False]

    viewer = dashboard_app(Principal("vic", "viewer"))
    viewer.run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # not offered
        viewer.switch_page(page_file("accounts")).run()
