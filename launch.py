"""Start the whole product: database, sources, demo data, scheduler and dashboard (`bin/run`).

With nothing configured this is a self-contained demo: the embedded PostgreSQL, the local
stand-ins for kolscan and the X API on 127.0.0.1, demo data on an empty database, and demo
dashboard accounts whose credentials are printed once. Set DATABASE_URL, KOLSCAN_BASE_URL,
X_API_BASE_URL and X_API_BEARER_TOKEN to run against real ones. Ctrl-C stops everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

from config import PROJECT_ROOT, ConfigError, Settings, get_settings, setup_logging
from db.engine import libpq_url, owner_url
from db.migrate import upgrade

log = logging.getLogger("kolops.launch")

KOLSCAN_STANDIN_PORT = 8601
X_API_STANDIN_PORT = 8602
WEBHOOK_STANDIN_PORT = 8603
OIDC_STANDIN_PORT = 8604
DEMO_OIDC_CLIENT = "kolops-demo"
DEMO_X_TOKEN = "demo-standin-token"
DEMO_PACE = {
    "MARKET_DURATION_FACTOR": "0.003",  # daily markets run ~4 minutes, weekly ~30
    "RESOLVE_INTERVAL_S": "20",
    "SCRAPE_CRON": "*/2 * * * *",
    "FOLLOWER_REFRESH_INTERVAL_S": "60",
    "GENERATE_INTERVAL_S": "300",
    "INTEGRITY_INTERVAL_S": "60",
    # Short windows, so the stand-ins' scheduled outages end in cancellations while you watch.
    "RESOLUTION_GRACE_MINUTES": "1",
    "MAX_SCRAPE_LAG_MINUTES": "6",
    "FOLLOWER_CACHE_MAX_AGE_MINUTES": "3",
    "ALERT_INTERVAL_S": "20",
}


def wait_http(
    url: str, timeout_s: float = 20.0, alive: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until `url` answers; give up after `timeout_s`, or as soon as `alive` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if alive is not None and alive.poll() is not None:
                break
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


# The dashboard's private files: Streamlit's secrets (its [auth] section, from the OIDC settings)
# and the generated identity-cookie secret when OIDC_COOKIE_SECRET is unset.
DASHBOARD_VAR = PROJECT_ROOT / "var" / "dashboard"


def _private(path: Path, text: str, *, replace: bool) -> None:
    """Write `text` to `path`, readable by this user only (0600), all at once: written to a
    temporary file, then renamed over `path` (replace) or linked to it only if it is new."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def cookie_secret(settings: Settings) -> str:
    """OIDC_COOKIE_SECRET, or one generated once and kept (so a restart keeps people signed in)."""
    if settings.oidc_cookie_secret:
        return settings.oidc_cookie_secret
    path = DASHBOARD_VAR / "oidc-cookie-secret"
    _private(path, secrets.token_urlsafe(48), replace=False)
    return path.read_text().strip()


def auth_secrets(settings: Settings, cookie: str) -> str:
    """Streamlit's `[auth]` section for `st.login`, from the OIDC settings (one provider)."""
    values = {
        "redirect_uri": settings.oidc_redirect_uri,
        "cookie_secret": cookie,
        "client_id": settings.oidc_client_id,
        "client_secret": settings.oidc_client_secret,
        "server_metadata_url": settings.oidc_server_metadata_url,
    }
    # JSON strings are TOML basic strings, except for a few characters TOML refuses raw: the
    # round trip proves the file says exactly the settings.
    text = "[auth]\n" + "".join(
        f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in values.items()
    )
    try:
        parsed = tomllib.loads(text)["auth"]
    except tomllib.TOMLDecodeError:
        parsed = None
    if parsed != values:
        raise ConfigError("the OIDC settings hold characters a Streamlit secrets file cannot")
    return text


def secrets_file(port: int) -> Path:
    """The Streamlit secrets file of the dashboard on `port` (removed when it stops)."""
    return DASHBOARD_VAR / f"streamlit-secrets-{port}.toml"


def dashboard_args(port: int) -> list[str]:
    """Python's arguments for `streamlit run app.py` on loopback `port`, headless, no telemetry;
    with single sign-on configured, the secrets file (0600) that holds Streamlit's [auth]."""
    settings = get_settings()
    secrets_args: list[str] = []
    if settings.sso_configured:
        path = secrets_file(port)
        _private(path, auth_secrets(settings, cookie_secret(settings)), replace=True)
        secrets_args = ["--secrets.files", str(path)]
    return [
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        *secrets_args,
    ]


def demo_sso_env(client_secret: str) -> dict[str, str]:
    """The OIDC settings that point the dashboard at the stand-in identity provider (DEMO_SSO)."""
    return {
        "OIDC_SERVER_METADATA_URL": f"http://127.0.0.1:{OIDC_STANDIN_PORT}/.well-known/openid-configuration",
        "OIDC_CLIENT_ID": DEMO_OIDC_CLIENT,
        "OIDC_CLIENT_SECRET": client_secret,
        "OIDC_PROVIDER_NAME": "the stand-in identity provider",
    }


def main() -> int:
    setup_logging()
    settings = get_settings()
    demo_idp: list[str] = []
    if settings.demo_sso and not settings.sso_configured:
        # The launcher's own settings name the stand-in, so the secrets file it writes for the
        # dashboard and the dashboard's environment agree.
        client_secret = secrets.token_urlsafe(24)
        os.environ.update(demo_sso_env(client_secret))
        get_settings.cache_clear()
        settings = get_settings()
        redirect = settings.oidc_redirect_uri.replace("{port}", str(settings.dashboard_port))
        demo_idp = [
            "-m", "standins.oidc_standin", "--port", str(OIDC_STANDIN_PORT),
            "--client-id", DEMO_OIDC_CLIENT, "--client-secret", client_secret,
            "--redirect-uri", redirect,
        ]  # fmt: skip
    env = dict(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    py = sys.executable

    def spawn(*args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([py, *args], cwd=PROJECT_ROOT, env=env)
        children.append(child)
        return child

    # The launcher holds the embedded server; children reach it through DATABASE_URL (the
    # owner, for migrations) and DATABASE_APP_URL (the role owning nothing, db.privileges).
    env["DATABASE_URL"] = owner_url()
    upgrade(env["DATABASE_URL"])
    env["DATABASE_APP_URL"] = libpq_url()
    log.info("database ready")

    if not settings.kolscan_configured:
        # Demo pace: markets close within minutes and the scheduler works while you watch.
        for key, value in DEMO_PACE.items():
            env.setdefault(key, value)
        spawn("-m", "standins.kolscan_standin", "--port", str(KOLSCAN_STANDIN_PORT))
        env["KOLSCAN_BASE_URL"] = f"http://127.0.0.1:{KOLSCAN_STANDIN_PORT}"
        wait_http(env["KOLSCAN_BASE_URL"] + "/leaderboard?timeframe=1")
        log.info("kolscan stand-in at %s", env["KOLSCAN_BASE_URL"])
    if not settings.x_api_configured:
        spawn(
            "-m",
            "standins.xapi_standin",
            "--port",
            str(X_API_STANDIN_PORT),
            "--token",
            DEMO_X_TOKEN,
        )
        env["X_API_BASE_URL"] = f"http://127.0.0.1:{X_API_STANDIN_PORT}"
        env["X_API_BEARER_TOKEN"] = DEMO_X_TOKEN
        log.info("X API stand-in at %s", env["X_API_BASE_URL"])
    if not settings.alert_channels:
        # No team channel configured: a local webhook receiver prints the alerts it gets, so the
        # demo's scheduled outages visibly reach "the team".
        spawn("-m", "standins.webhook_standin", "--port", str(WEBHOOK_STANDIN_PORT))
        env["ALERT_CHANNELS"] = f"json://127.0.0.1:{WEBHOOK_STANDIN_PORT}/alerts"
        log.info("alerts go to the webhook stand-in at %s", env["ALERT_CHANNELS"])
    if demo_idp:
        spawn(*demo_idp)
        wait_http(settings.oidc_server_metadata_url)
        log.info(
            "single sign-on through the stand-in identity provider at %s", settings.oidc_issuer
        )
    # Demo data goes through the real services, in a child that sees the final environment.
    subprocess.run([py, "-m", "services.ops.demo"], cwd=PROJECT_ROOT, env=env, check=True)

    if not settings.kolscan_configured and not settings.x_api_configured:
        spawn(
            "-m",
            "standins.outages",
            "--kolscan",
            env["KOLSCAN_BASE_URL"],
            "--xapi",
            env["X_API_BASE_URL"],
        )
    spawn("scheduler.py")
    # Metrics and health (METRICS_PORT), alert delivery, and the watch on the scheduler's leader.
    spawn("-m", "services.ops.monitor")
    spawn(*dashboard_args(settings.dashboard_port))
    url = f"http://127.0.0.1:{settings.dashboard_port}"
    wait_http(url + "/_stcore/health", timeout_s=60)
    print(f"\n  KOL Market Ops dashboard: {url}\n  (Ctrl-C to stop)\n", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.is_set():
            for child in children:
                if child.poll() is not None:
                    log.error("%s exited with %s; stopping", child.args, child.returncode)
                    stop.set()
            stop.wait(1.0)
    finally:
        for child in reversed(children):
            child.terminate()
        for child in reversed(children):
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        secrets_file(settings.dashboard_port).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
