"""The storm test: the whole system under load, faults and hostile input keeps every cent and
lets no one in.

    .venv/bin/python -m pytest tests/storm -s -q                      short form (about 75 s)
    STORM_SECONDS=600 .venv/bin/python -m pytest tests/storm -s -q    long form (10 minutes)

`-s` shows the summary; the test asserts every invariant either way. STORM_SEED replays a run's
random choices (the threads still interleave differently).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from psycopg.types.json import Jsonb

from config import get_settings
from db.engine import transaction
from services.errors import ErrorCode, ServiceError
from services.money import bets, users
from services.money.integrity import check_integrity
from services.ops import audit, auth, operator
from services.sources.scraper import CHROMIUM_ARGS
from services.views import markets as market_views
from standins.kolscan_standin import KolscanStandin
from standins.xapi_standin import XApiStandin
from tests.conftest import Standins, running_dashboard
from tests.storm.harness import HOSTILE, LONG, OPERATOR, VIEWER, Config, Storm
from tests.storm.invariants import Window
from tests.support import accounts
from tests.support.factories import new_market

SHORT_SECONDS = 75.0


@pytest.fixture()
def storm_env(db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Both stand-ins with live data (the leaderboard moves every 20 s), and a configuration that
    makes everything happen within seconds: sweeps every 2 s, scrapes every minute, generated
    daily markets lasting about half a minute, a one-minute grace. Applied to this process and
    to every scheduler process."""
    with (
        KolscanStandin(bucket_seconds=20, first_ms=30, batch_ms=10) as site,
        XApiStandin(token="storm-token", rate_limit=120, window_s=60, bucket_s=10) as x,
    ):
        env = {
            "KOLSCAN_BASE_URL": site.base_url,
            "X_API_BASE_URL": x.base_url,
            "X_API_BEARER_TOKEN": x.token,
            "X_API_MAX_RETRIES": "1",
            "X_API_MAX_WAIT_S": "1",
            "X_API_READ_TIMEOUT_S": "1",
            "SCRAPE_TIMEOUT_S": "8",
            "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "RESOLVE_INTERVAL_S": "2",
            "RESOLUTION_GRACE_MINUTES": "1",
            "MAX_SCRAPE_LAG_MINUTES": "60",
            "FOLLOWER_CACHE_MAX_AGE_MINUTES": "15",
            "FOLLOWER_REFRESH_INTERVAL_S": "10",
            "GENERATE_INTERVAL_S": "20",
            "MARKET_DURATION_FACTOR": "0.0003",
            "INTEGRITY_INTERVAL_S": "10",
            "SCRAPE_CRON": "* * * * *",
            "JOB_TIMEOUT_S": "60",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.mark.storm
def test_storm_keeps_every_cent(db: str, storm_env: dict[str, str], tmp_path: Path) -> None:
    seconds = float(os.environ.get("STORM_SECONDS") or SHORT_SECONDS)
    config = Config(seconds=seconds, drain_s=max(240.0, seconds / 2))
    if os.environ.get("STORM_SEED"):
        config.seed = int(os.environ["STORM_SEED"])
    settings = get_settings()
    storm = Storm(
        config,
        db_url=db,
        env=storm_env,
        window=Window(
            lag=dt.timedelta(minutes=settings.max_scrape_lag_minutes),
            max_age=dt.timedelta(minutes=settings.follower_cache_max_age_minutes),
        ),
        kolscan_url=storm_env["KOLSCAN_BASE_URL"],
        xapi_url=storm_env["X_API_BASE_URL"],
        logs=tmp_path,
    )
    drain_s = 0.0
    try:
        storm.setup()
        storm.run()
        storm.check("end of the storm")
        drain_s = storm.drain()
        final = storm.check("after the drain (final)", final=True)
        final.results.append(storm.refusals_audited())
        final.results.append(storm.quarantine_bites())
    finally:
        storm.shutdown()
        print(storm.summary(drain_s))
    assert not storm.thread_errors, storm.thread_errors
    failed = [f"{p.label}: {r.line()}" for p in storm.checkpoints for r in p.results if not r.ok]
    assert not failed, "\n".join(failed)
    counts = storm.tally.counts
    # The storm really stormed: every kind of trouble happened, and work got done through it.
    assert counts["bets"]["buy"] > 0 and counts["bets"]["sell"] > 0
    assert counts["chaos"]["scheduler killed with SIGKILL"] > 0
    assert sum(n for k, n in counts["chaos"].items() if k.startswith("connection")) > 0
    assert storm.tally.total("faults injected") > 0
    assert storm.tally.total("operator") > 0
    assert len(storm.checkpoints) >= 3


# -- hostile input, from the database to the pages of a real browser ----------------------------

ADMIN, ADMIN_PASSWORD = "storm-admin", "storm admin password"
SQL_FRAGMENT = "'; DROP TABLE users; --"
# X handles hold at most 32 characters; this one still carries a script.
HOSTILE_HANDLE = "<svg onload=window.__pwned=1>"
# Any element carrying the payloads as markup rather than text: an attribute or a script body.
_INJECTED_JS = """() => [...document.querySelectorAll('*')].filter(el =>
    (el.tagName === 'SCRIPT' && el.textContent.includes('__pwned')) ||
    [...el.attributes].some(a => a.value.includes('__pwned'))).length"""


def _plant_hostile_data(db: str) -> dict[str, int]:
    """Hostile text through the real write paths where they exist (market titles via
    open_market, operator reasons via services.ops.operator, bets via place_bet) and directly
    where only a scrape would write (KOLs, scraped rows, rejects, a failed run's error)."""
    names = [*HOSTILE, LONG]
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(db) as conn:
        run = conn.execute(
            "INSERT INTO scrape_runs (timeframe, trigger, source_url, status, finished_at,"
            " snapshot_at, rows_found, rows_stored, rows_rejected)"
            " VALUES ('daily', 'MANUAL', %s, 'PARTIAL', now(), now(), %s, %s, 1) RETURNING id",
            (f"http://127.0.0.1/{SQL_FRAGMENT}", len(names) + 1, len(names)),
        ).fetchone()[0]
        kol_ids = []
        for rank, name in enumerate(names, start=1):
            wallet = f"Hostile{rank}{name}"[:64]
            kol_id = conn.execute(
                "INSERT INTO kols (display_name, wallet, x_handle) VALUES (%s, %s, %s)"
                " RETURNING id",
                (name, wallet, HOSTILE_HANDLE),
            ).fetchone()[0]
            kol_ids.append(kol_id)
            conn.execute(
                "INSERT INTO scraped_kols (run_id, kol_id, rank, username, wallet, x_handle,"
                " wins, losses, sol_gain, usd_gain, timeframe, scraped_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, 3, 1, 12.5, 2500, 'daily', now())",
                (run, kol_id, rank, name, wallet, HOSTILE_HANDLE),
            )
        conn.execute(
            "INSERT INTO scrape_rejects (run_id, position, raw, field, reason_code, reason)"
            " VALUES (%s, 99, %s, 'name', 'PARSE_BAD_NUMBER', %s)",
            (run, Jsonb({"name": HOSTILE[0], "sol": HOSTILE[1]}), HOSTILE[2]),
        )
        conn.execute(
            "INSERT INTO scrape_runs (timeframe, trigger, source_url, status, finished_at,"
            " error_code, error_message) VALUES ('daily', 'SCHEDULE', 'http://127.0.0.1/',"
            " 'FAILED', now(), 'SCRAPE_LAYOUT_CHANGED', %s)",
            (HOSTILE[1] + HOSTILE[0],),
        )
    with transaction() as s:
        users.fund_house(s, Decimal(1_000_000), key="hostile:house", actor="storm")
    user = users.register("hostile-bettor", Decimal(1000), actor="storm")
    markets: dict[str, int] = {}
    for i, title in enumerate(names):
        with transaction() as s:
            markets[title] = new_market(
                s,
                title=title,
                kol_a_id=kol_ids[i],
                baseline={"a": {"kol_id": kol_ids[i], "note": title}},
                opens_at=now - dt.timedelta(minutes=1),
            )
        bets.place_bet(
            user_id=user, market_id=markets[title], side="YES", action="BUY", amount=Decimal(5)
        )
    # Operator reasons: a cancel with each hostile reason, and a re-settle of one of them.
    for title, reason in zip(names, HOSTILE, strict=False):
        result = operator.cancel_and_refund(
            OPERATOR, markets[title], reason, expected_status="OPEN"
        )
        assert result.ok, result
    result = operator.resettle(
        OPERATOR, markets[HOSTILE[0]], "YES", HOSTILE[1], expected_status="CANCELLED"
    )
    assert result.ok, result
    return markets


def _streamlit(tmp_path: Path) -> Iterator[str]:
    with running_dashboard(
        tmp_path / "streamlit.log", dict(os.environ), "--server.fileWatcherType", "none"
    ) as url:
        yield url


@pytest.fixture()
def dashboard(db: str, standins: Standins, tmp_path: Path) -> Iterator[str]:
    yield from _streamlit(tmp_path)


def _quiet(page: Page) -> None:
    """Wait until Streamlit has finished running the script for the last interaction."""
    page.wait_for_timeout(400)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000
    )


def _login(page: Page, url: str, username: str, password: str) -> None:
    page.goto(url)
    _quiet(page)
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    _quiet(page)


def _assert_inert(page: Page, where: str) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined", f"script ran on {where}"
    assert page.evaluate(_INJECTED_JS) == 0, f"payload became markup on {where}"
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()}"


def _navigate(page: Page, href: str) -> None:
    page.locator(f'[data-testid="stSidebarNavLink"][href="{href}"]').click()
    _quiet(page)


def _visible_text(page: Page) -> str:
    return " ".join(page.locator("body").inner_text().split())


@pytest.mark.storm
@pytest.mark.browser
def test_hostile_input_reaches_the_pages_as_text_and_no_one_gets_in(
    db: str, dashboard: str
) -> None:
    auth.create_account(ADMIN, ADMIN_PASSWORD, "admin")
    auth.create_account("storm-viewer", "storm viewer password", "viewer")
    accounts.ensure(OPERATOR)
    markets = _plant_hostile_data(db)

    # Through the service layer: a viewer, and no login at all, are refused and audited.
    target = markets[HOSTILE[2]]
    for who, code in ((VIEWER, ErrorCode.PERMISSION_DENIED), (None, ErrorCode.NOT_AUTHENTICATED)):
        for act in (
            partial(operator.resettle, who, target, "NO", "sneaky", expected_status="CANCELLED"),
            partial(operator.cancel_and_refund, who, target, "x", expected_status="CANCELLED"),
            partial(operator.retry_resolution, who, target, "sneaky"),
        ):
            with pytest.raises(ServiceError) as refused:
                act()
            assert refused.value.code is code
    refusals = [r for r in audit.recent(limit=20) if r["result"] == "REFUSED"]
    assert len(refusals) == 6
    assert {r["username"] for r in refusals} == {VIEWER.username, None}
    # A search is a parameter, and LIKE wildcards in it are literal.
    found = market_views.list_markets(search=SQL_FRAGMENT)
    assert [r["id"] for r in found.rows] == [markets[SQL_FRAGMENT]]
    assert market_views.list_markets(search="%").total == 0

    with sync_playwright() as pw:
        chromium = get_settings().chromium_path
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))

            # Wrong passwords (one a SQL fragment) are refused, shown plainly, and audited.
            for username, password in ((ADMIN, "not the password"), (SQL_FRAGMENT, SQL_FRAGMENT)):
                _login(page, dashboard, username, password)
                expect(page.get_by_text("wrong username or password")).to_be_visible()
                _assert_inert(page, "login")
            logins = audit.recent(action="login")
            assert [r["result"] for r in logins[:2]] == ["REFUSED", "REFUSED"]
            assert logins[0]["target"] == f"dashboard_account:{SQL_FRAGMENT}"

            _login(page, dashboard, ADMIN, ADMIN_PASSWORD)
            assert audit.recent(action="login")[0]["result"] == "OK"
            more = page.locator('[data-testid="stSidebarNavViewButton"]')
            if more.count():
                more.click()
            links = page.locator('[data-testid="stSidebarNavLink"]')
            hrefs = [links.nth(i).get_attribute("href") or "" for i in range(links.count())]
            assert len(hrefs) >= 2, "the navigation shows the pages"

            # Every page: nothing runs, nothing breaks, and every search box takes SQL. (A page
            # load is a new Streamlit session, logged out: move by the navigation instead.)
            searched = 0
            for href in hrefs:
                _navigate(page, href)
                _assert_inert(page, href)
                tabs = page.get_by_role("tab")
                for t in range(max(1, tabs.count())):
                    if tabs.count():
                        tabs.nth(t).click()
                    boxes = page.locator('[data-testid="stTextInput"] input[type="text"]:visible')
                    for i in range(boxes.count()):
                        boxes.nth(i).fill(SQL_FRAGMENT)
                        boxes.nth(i).press("Enter")
                        _quiet(page)
                        _assert_inert(page, f"{href} after searching")
                        searched += 1
            assert searched >= 1, "no page offered a search box"

            # A market's page shows its title exactly as text.
            markets_href = next(h for h in hrefs if h.rstrip("/").endswith("/markets"))
            _navigate(page, markets_href)
            for title, market_id in markets.items():
                goto = page.locator('input[aria-label="Open market by id"]')
                goto.fill(str(market_id))
                goto.press("Enter")
                _quiet(page)
                _assert_inert(page, f"market {market_id}")
                text_ = _visible_text(page)
                assert f"Market #{market_id}" in text_
                assert " ".join(title.split()) in text_, f"title of market {market_id} not shown"
                page.get_by_role("button", name="← All markets").click()
                _quiet(page)

            # Without a login every page is the login form and nothing else. Each check waits
            # for that definite state (the form's password field), never for a quiet period: a
            # slow page and a leaking one must not look alike.
            anonymous = browser.new_page()  # a context of its own: no session cookie
            for href in [*hrefs, f"{dashboard}/markets?market={quote(HOSTILE[0])}"]:
                anonymous.goto(href)
                expect(anonymous.locator('input[name="password"]')).to_be_visible(timeout=60_000)
                _quiet(anonymous)
                _assert_inert(anonymous, f"{href} without login")
                assert anonymous.locator('[data-testid="stSidebarNavLink"]').count() <= 1
                text_ = _visible_text(anonymous)
                assert "Market health" not in text_ and "<script>" not in text_, href
        finally:
            browser.close()
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1
    assert check_integrity().ok
