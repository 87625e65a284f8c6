"""All configuration, read from environment variables (and `.env` when present).

Every variable is documented in `.env.example`; nothing else in the project reads the environment.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from dotenv import load_dotenv

PROJECT_ROOT = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A configuration variable holds a value that cannot be used."""


def _str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _positive(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {value}")
    return value


def _decimal(name: str, default: str) -> Decimal:
    raw = os.environ.get(name, "").strip() or default
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite():
        raise ConfigError(f"{name} must be finite, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    # Database: empty means "start the embedded PostgreSQL in embedded_pgdata".
    database_url: str = ""
    embedded_pgdata: Path = PROJECT_ROOT / ".pgdata"

    # Outside sources.
    kolscan_base_url: str = "https://kolscan.io"
    # False when the URL was left unset: the launcher then starts the local stand-in instead.
    kolscan_configured: bool = False
    x_api_base_url: str = "https://api.x.com"
    x_api_configured: bool = False
    x_api_bearer_token: str = field(default="", repr=False)
    x_api_connect_timeout_s: float = 3.0
    x_api_read_timeout_s: float = 10.0
    x_api_max_retries: int = 3
    x_api_max_wait_s: float = 5.0
    chromium_path: str = "/usr/bin/chromium"
    scrape_timeout_s: int = 30
    artifacts_dir: Path = PROJECT_ROOT / "var" / "artifacts"

    # Resolution policy.
    resolution_grace_minutes: int = 30
    max_scrape_lag_minutes: int = 60
    follower_cache_max_age_minutes: int = 15
    # The generator opens no market from a leaderboard snapshot older than this.
    generator_max_snapshot_age_minutes: int = 60

    # Money.
    fee_rate: Decimal = Decimal("0.02")
    market_liquidity: Decimal = Decimal("1000")
    max_trade_pool_fraction: Decimal = Decimal("0.25")
    # Generated markets run one timeframe (a day, a week, 30 days) times this factor; the demo
    # shrinks it so markets close and resolve while you watch.
    market_duration_factor: Decimal = Decimal(1)

    # Schedules (seconds between runs, or a crontab expression for scrapes).
    resolve_interval_s: int = 60
    integrity_interval_s: int = 300
    follower_refresh_interval_s: int = 300
    generate_interval_s: int = 3600
    scrape_cron: str = "*/15 * * * *"
    job_timeout_s: int = 240

    # Interventions at scale (issue 17): a money action moving more than this much money or
    # touching more than this many markets needs a second operator's approval; proposals expire;
    # a bulk action above its own thresholds asks the operator to type the count.
    approval_min_amount: Decimal = Decimal("10000")
    approval_min_markets: int = 20
    approval_ttl_minutes: int = 60
    bulk_confirm_markets: int = 10
    bulk_confirm_amount: Decimal = Decimal("1000")

    # Dashboard.
    dashboard_refresh_s: int = 10
    dashboard_port: int = 8501
    # Dashboard sessions and logins (issue 15).
    session_idle_minutes: int = 60
    session_max_hours: int = 12
    session_cookie_secure: bool = False
    login_free_failures: int = 3
    login_max_failures: int = 8
    login_lock_minutes: int = 15
    database_app_url: str = field(default="", repr=False)

    # Alerts, delivery and metrics (issue 18).
    alert_interval_s: int = 60
    alert_reminder_minutes: int = 240
    alert_channels: tuple[str, ...] = field(default=(), repr=False)
    alert_delivery_attempts: int = 4
    alert_delivery_backoff_s: float = 5.0
    alert_delivery_timeout_s: float = 10.0
    alert_cancelled_window_minutes: int = 30
    alert_scrape_failures: int = 2
    alert_scrape_history: int = 10
    alert_scrape_drop_ratio: Decimal = Decimal("0.5")
    alert_scrape_jump: Decimal = Decimal("0.2")
    alert_follower_horizon_minutes: int = 60
    alert_leader_stale_s: int = 30
    alert_job_failures: int = 3
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8610
    # Where the dashboard is reached, for the links in alert messages.
    dashboard_url: str = "http://127.0.0.1:8501"

    # Retention and incremental integrity (issue 19).
    # A RESOLVED or CANCELLED market may be re-settled this long after it became final; its
    # evidence is kept at least that long (services/ops/retention.py).
    resettle_window_days: int = 30
    retention_cron: str = "40 3 * * *"
    retention_scrape_days: int = 90
    retention_follower_full_days: int = 7
    retention_follower_days: int = 365
    retention_job_run_days: int = 30
    retention_delivery_days: int = 90
    retention_artifact_days: int = 30
    retention_artifact_budget_mb: int = 1024
    integrity_full_cron: str = "10 3 * * *"

    # Single sign-on through an OpenID Connect provider (issue 15): on when the metadata URL,
    # client id and client secret are all set; nothing set keeps local accounts only.
    oidc_server_metadata_url: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    # Signs Streamlit's identity cookie; empty: one generated and kept in var/dashboard.
    oidc_cookie_secret: str = field(default="", repr=False)
    oidc_provider_name: str = "single sign-on"
    # Where the provider sends the browser back: DASHBOARD_URL's /oauth2callback, or (with
    # DASHBOARD_URL unset) loopback on the port the dashboard serves, which Streamlit fills in.
    oidc_redirect_uri: str = "http://127.0.0.1:{port}/oauth2callback"
    # The username/password form beside SSO (break-glass admin); off only when SSO is on.
    local_login: bool = True
    # bin/run without OIDC settings: start the stand-in identity provider and use it.
    demo_sso: bool = False

    @property
    def sso_configured(self) -> bool:
        return bool(self.oidc_server_metadata_url)

    @property
    def oidc_issuer(self) -> str:
        """The issuer the provider's metadata URL names (OpenID Connect Discovery: the metadata
        lives at ISSUER/.well-known/openid-configuration); only its ID tokens sign anyone in."""
        return self.oidc_server_metadata_url.removesuffix(OIDC_DISCOVERY_PATH)


OIDC_DISCOVERY_PATH = "/.well-known/openid-configuration"


def _oidc() -> dict[str, object]:
    """The single sign-on settings, checked together: all three of the provider's or none."""
    metadata_url = _str("OIDC_SERVER_METADATA_URL", "")
    client_id = _str("OIDC_CLIENT_ID", "")
    client_secret = _str("OIDC_CLIENT_SECRET", "")
    given = [bool(metadata_url), bool(client_id), bool(client_secret)]
    if any(given) and not all(given):
        raise ConfigError(
            "single sign-on needs OIDC_SERVER_METADATA_URL, OIDC_CLIENT_ID and"
            " OIDC_CLIENT_SECRET together (or none of them)"
        )
    if metadata_url and (
        not metadata_url.startswith(("https://", "http://"))
        or not metadata_url.endswith(OIDC_DISCOVERY_PATH)
    ):
        raise ConfigError(
            f"OIDC_SERVER_METADATA_URL must be an http(s) URL ending in {OIDC_DISCOVERY_PATH},"
            f" got {metadata_url!r}"
        )
    local_login = _str("LOCAL_LOGIN", "true").lower() in ("1", "true")
    if not local_login and not metadata_url:
        raise ConfigError("LOCAL_LOGIN=false needs single sign-on (OIDC_*) configured")
    dashboard_url = _str("DASHBOARD_URL", "").rstrip("/")
    return {
        "oidc_server_metadata_url": metadata_url,
        "oidc_client_id": client_id,
        "oidc_client_secret": client_secret,
        "oidc_cookie_secret": _str("OIDC_COOKIE_SECRET", ""),
        "oidc_provider_name": _str("OIDC_PROVIDER_NAME", "single sign-on"),
        "oidc_redirect_uri": (dashboard_url or "http://127.0.0.1:{port}") + "/oauth2callback",
        "local_login": local_login,
        "demo_sso": _str("DEMO_SSO", "false").lower() in ("1", "true"),
    }


def setup_logging(level: int = logging.INFO) -> None:
    """One readable line per event on stdout; the embedded server's chatter kept quiet."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    for noisy in ("pgserver", "apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # platformdirs warns about XDG_RUNTIME_DIR on every embedded start; it is harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; cached, call `get_settings.cache_clear()` after changing the env."""
    load_dotenv(PROJECT_ROOT / ".env", override=False)
    fee_rate = _decimal("FEE_RATE", "0.02")
    if not Decimal(0) <= fee_rate < Decimal(1):
        raise ConfigError(f"FEE_RATE must be in [0, 1), got {fee_rate}")
    return Settings(
        database_url=_str("DATABASE_URL", ""),
        embedded_pgdata=Path(_str("EMBEDDED_PGDATA", str(PROJECT_ROOT / ".pgdata"))),
        kolscan_base_url=_str("KOLSCAN_BASE_URL", "https://kolscan.io").rstrip("/"),
        kolscan_configured=bool(_str("KOLSCAN_BASE_URL", "")),
        x_api_base_url=_str("X_API_BASE_URL", "https://api.x.com").rstrip("/"),
        x_api_configured=bool(_str("X_API_BASE_URL", "")),
        x_api_bearer_token=_str("X_API_BEARER_TOKEN", ""),
        x_api_connect_timeout_s=float(_decimal("X_API_CONNECT_TIMEOUT_S", "3")),
        x_api_read_timeout_s=float(_decimal("X_API_READ_TIMEOUT_S", "10")),
        x_api_max_retries=_int("X_API_MAX_RETRIES", 3),
        x_api_max_wait_s=float(_decimal("X_API_MAX_WAIT_S", "5")),
        chromium_path=_str("CHROMIUM_PATH", "/usr/bin/chromium"),
        scrape_timeout_s=_int("SCRAPE_TIMEOUT_S", 30),
        artifacts_dir=Path(_str("ARTIFACTS_DIR", str(PROJECT_ROOT / "var" / "artifacts"))),
        resolution_grace_minutes=_int("RESOLUTION_GRACE_MINUTES", 30),
        max_scrape_lag_minutes=_int("MAX_SCRAPE_LAG_MINUTES", 60),
        follower_cache_max_age_minutes=_int("FOLLOWER_CACHE_MAX_AGE_MINUTES", 15),
        generator_max_snapshot_age_minutes=_int("GENERATOR_MAX_SNAPSHOT_AGE_MINUTES", 60),
        fee_rate=fee_rate,
        market_liquidity=_decimal("MARKET_LIQUIDITY", "1000"),
        max_trade_pool_fraction=_decimal("MAX_TRADE_POOL_FRACTION", "0.25"),
        market_duration_factor=_decimal("MARKET_DURATION_FACTOR", "1"),
        resolve_interval_s=_int("RESOLVE_INTERVAL_S", 60),
        integrity_interval_s=_int("INTEGRITY_INTERVAL_S", 300),
        follower_refresh_interval_s=_int("FOLLOWER_REFRESH_INTERVAL_S", 300),
        generate_interval_s=_int("GENERATE_INTERVAL_S", 3600),
        scrape_cron=_str("SCRAPE_CRON", "*/15 * * * *"),
        job_timeout_s=_int("JOB_TIMEOUT_S", 240),
        approval_min_amount=_decimal("APPROVAL_MIN_AMOUNT", "10000"),
        approval_min_markets=_int("APPROVAL_MIN_MARKETS", 20),
        approval_ttl_minutes=_int("APPROVAL_TTL_MINUTES", 60),
        bulk_confirm_markets=_int("BULK_CONFIRM_MARKETS", 10),
        bulk_confirm_amount=_decimal("BULK_CONFIRM_AMOUNT", "1000"),
        dashboard_refresh_s=_int("DASHBOARD_REFRESH_S", 10),
        dashboard_port=_int("DASHBOARD_PORT", 8501),
        session_idle_minutes=max(1, _int("SESSION_IDLE_MINUTES", 60)),
        session_max_hours=max(1, _int("SESSION_MAX_HOURS", 12)),
        session_cookie_secure=_str("SESSION_COOKIE_SECURE", "false").lower() in ("1", "true"),
        login_free_failures=max(1, _int("LOGIN_FREE_FAILURES", 3)),
        login_max_failures=max(1, _int("LOGIN_MAX_FAILURES", 8)),
        login_lock_minutes=max(1, _int("LOGIN_LOCK_MINUTES", 15)),
        database_app_url=_str("DATABASE_APP_URL", ""),
        alert_interval_s=_int("ALERT_INTERVAL_S", 60),
        alert_reminder_minutes=_int("ALERT_REMINDER_MINUTES", 240),
        alert_channels=tuple(os.environ.get("ALERT_CHANNELS", "").split()),
        alert_delivery_attempts=max(1, _int("ALERT_DELIVERY_ATTEMPTS", 4)),
        alert_delivery_backoff_s=float(_decimal("ALERT_DELIVERY_BACKOFF_S", "5")),
        alert_delivery_timeout_s=float(_decimal("ALERT_DELIVERY_TIMEOUT_S", "10")),
        alert_cancelled_window_minutes=_int("ALERT_CANCELLED_WINDOW_MINUTES", 30),
        alert_scrape_failures=_int("ALERT_SCRAPE_FAILURES", 2),
        alert_scrape_history=_int("ALERT_SCRAPE_HISTORY", 10),
        alert_scrape_drop_ratio=_decimal("ALERT_SCRAPE_DROP_RATIO", "0.5"),
        alert_scrape_jump=_decimal("ALERT_SCRAPE_JUMP", "0.2"),
        alert_follower_horizon_minutes=_int("ALERT_FOLLOWER_HORIZON_MINUTES", 60),
        alert_leader_stale_s=_int("ALERT_LEADER_STALE_S", 30),
        alert_job_failures=_int("ALERT_JOB_FAILURES", 3),
        metrics_host=_str("METRICS_HOST", "127.0.0.1"),
        metrics_port=_int("METRICS_PORT", 8610),
        dashboard_url=_str(
            "DASHBOARD_URL", f"http://127.0.0.1:{_int('DASHBOARD_PORT', 8501)}"
        ).rstrip("/"),
        resettle_window_days=_positive("RESETTLE_WINDOW_DAYS", 30),
        retention_cron=_str("RETENTION_CRON", "40 3 * * *"),
        retention_scrape_days=_positive("RETENTION_SCRAPE_DAYS", 90),
        retention_follower_full_days=_positive("RETENTION_FOLLOWER_FULL_DAYS", 7),
        retention_follower_days=_positive("RETENTION_FOLLOWER_DAYS", 365),
        retention_job_run_days=_positive("RETENTION_JOB_RUN_DAYS", 30),
        retention_delivery_days=_positive("RETENTION_DELIVERY_DAYS", 90),
        retention_artifact_days=_positive("RETENTION_ARTIFACT_DAYS", 30),
        retention_artifact_budget_mb=_positive("RETENTION_ARTIFACT_BUDGET_MB", 1024),
        integrity_full_cron=_str("INTEGRITY_FULL_CRON", "10 3 * * *"),
        **_oidc(),  # type: ignore[arg-type]
    )
