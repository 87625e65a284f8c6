"""STAND-IN for kolscan.io: a local fake of its leaderboard page, for tests and the demo only.

It serves `/leaderboard?timeframe=1|7|30` on 127.0.0.1 the way PRODUCT.md section 8 describes
the real site: the HTML shell holds no rows; a script renders them after a short delay and adds
more in batches as the page is scrolled. The numbers come from `standins.roster` and change with
time: they are a pure function of (timeframe, time bucket), so consecutive snapshots differ while
a test can still ask for exactly what a given bucket shows (`leaderboard`, `expected_rows`).

Variants, switched with `set_variant()` or `POST /__standin__/variant {"variant": ...}`:
normal, big (500+ rows, synthetic KOLs beyond the roster), odd (unicode minus, K/M, missing
handle, 0/0 record, one unreadable row), layout_changed, empty, slow (rows arrive after two
minutes), error (HTTP 500), busy (the first rows arrive, then the page's script busy-loops
forever: the page never answers the browser again).

Run it: `python -m standins.kolscan_standin --port 8601`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from services.vocabulary import Timeframe
from standins.roster import RosterKol, roster, wallet_for

VARIANTS = ("normal", "big", "odd", "layout_changed", "empty", "slow", "error", "busy")
# How long after its first rows the `busy` page stops yielding: long enough for a scraper to see
# the rows (so it goes on to scroll and read them), short enough to catch it doing so.
BUSY_AFTER_MS = 200
# The site names a board by its `?timeframe=` parameter.
_BY_PARAM = {tf.kolscan_param: tf for tf in Timeframe}
BIG_ROWS = 600
# How much bigger a longer board's numbers are: the stand-in's own choice, not the site's.
_SCALE = {Timeframe.DAILY: 1, Timeframe.WEEKLY: 4, Timeframe.MONTHLY: 12}
_MINUS = "\u2212"


@dataclass(frozen=True)
class StandinRow:
    """One row as the page shows it, and what a correct scraper must read from it."""

    name: str  # as displayed, stray whitespace included
    wallet: str
    x_hrefs: tuple[str, ...]
    record: str
    sol: str
    usd: str
    readable: bool  # False for the deliberately unreadable row of the `odd` variant
    username: str
    x_handle: str | None
    wins: int
    losses: int
    sol_gain: Decimal
    usd_gain: Decimal


# --- the site's number formats --------------------------------------------------------------


def compact(value: Decimal) -> Decimal:
    """`value` rounded to what the K/M format can show (one decimal of thousands/millions)."""
    unit = Decimal(1_000_000) if abs(value) >= 1_000_000 else Decimal(1000)
    if abs(value) < 1000:
        return value
    return (value / unit).quantize(Decimal("0.1")) * unit


def _body(magnitude: Decimal, places: str, use_suffix: bool) -> str:
    if use_suffix and magnitude >= 1000:
        unit, suffix = (1_000_000, "M") if magnitude >= 1_000_000 else (1000, "K")
        return f"{magnitude / unit:,.1f}".removesuffix(".0") + suffix
    return f"{magnitude:,{places}}"


def format_sol(value: Decimal, *, minus: str = "-", use_suffix: bool = False) -> str:
    """`+1,234.56 Sol`, `-3.20 Sol`, `0.00 Sol`; `+12.3K Sol` with `use_suffix`."""
    sign = "+" if value > 0 else minus if value < 0 else ""
    return f"{sign}{_body(abs(value), '.2f', use_suffix)} Sol"


def format_usd(
    value: Decimal, *, signed: bool = False, minus: str = "-", use_suffix: bool = False
) -> str:
    """`($23,820.3)`: unsigned unless `signed` (then `(-$5)`); `($1.2M)` with `use_suffix`."""
    sign = (minus if value < 0 else "+" if value > 0 else "") if signed else ""
    return f"({sign}${_body(abs(value), '.1f', use_suffix).removesuffix('.0')})"


# --- the data --------------------------------------------------------------------------------


def _kols(variant: str, size: int) -> list[RosterKol]:
    kols = roster()
    if variant == "big":
        kols += [
            RosterKol(f"Trader{n:04d}", wallet_for(f"synthetic:{n}"), f"trader{n:04d}")
            for n in range(size - len(kols))
        ]
    return kols


def _base_row(
    kol: RosterKol, index: int, timeframe: Timeframe, bucket: int, price: Decimal
) -> StandinRow:
    rng = random.Random(f"{timeframe}:{bucket}:{kol.wallet}")
    scale = _SCALE[timeframe]
    # A lasting skill plus this bucket's luck, in SOL cents: ranks swap, gains change sign.
    skill = int.from_bytes(hashlib.sha256(kol.wallet.encode()).digest()[:2]) % 3000 - 800
    sol = Decimal((skill + rng.randint(-4000, 4000)) * scale) / 100
    trades = rng.randint(1, 40 * scale)
    wins = rng.randint(0, trades)
    usd = (sol * price).quantize(Decimal("0.1"))
    host = "twitter.com" if index % 10 == 4 else "x.com"
    hrefs = (f"https://{host}/{kol.x_handle}",) if kol.x_handle else ()
    return StandinRow(
        name=kol.name,
        wallet=kol.wallet,
        x_hrefs=hrefs,
        record=f"{wins:,}/{trades - wins:,}",
        sol=format_sol(sol),
        usd=format_usd(usd),
        readable=True,
        username=kol.name,
        x_handle=kol.x_handle,
        wins=wins,
        losses=trades - wins,
        sol_gain=sol,
        usd_gain=usd,
    )


def _oddify(row: StandinRow, index: int, price: Decimal) -> StandinRow:
    """The `odd` variant: every unusual format the real page has shown, on fixed roster rows."""
    sol, usd, signed = row.sol_gain, row.usd_gain, False
    changes: dict[str, Any] = {}
    if index == 0:  # a whale: K on the SOL figure, M on the USD one
        sol = Decimal(12300)
        usd = compact(sol * price)
    elif index == 1:
        changes.update(x_hrefs=(), x_handle=None)
    elif index == 2:  # a share-intent link first, then the profile on twitter.com
        changes["x_hrefs"] = (
            f"https://x.com/intent/follow?screen_name={row.x_handle}",
            f"https://twitter.com/{row.x_handle}",
        )
    elif index == 3:
        sol = usd = Decimal(0)
        changes.update(record="0/0", wins=0, losses=0)
    elif index == 4:
        changes["name"] = f"\n   {row.name}\u00a0 "
    elif index == 5:  # a USD figure carrying its own sign
        sol, signed = -abs(sol) - 1, True
        usd = compact((sol * price).quantize(Decimal("0.1")))
    elif index == 8:
        changes.update(readable=False)
    elif index == 9:  # only a link to a post, not to the profile
        changes.update(x_hrefs=(f"https://x.com/{row.x_handle}/status/1790000000000000000",))
        changes["x_handle"] = None
    sol, usd = compact(sol), compact(usd)
    sol_text = format_sol(sol, minus=_MINUS, use_suffix=True)
    if index == 4:
        sol_text = sol_text.replace(" Sol", "\u00a0Sol")
    if index == 8:
        sol_text = "NaN Sol"
    usd_text = format_usd(usd, signed=signed, minus=_MINUS, use_suffix=True)
    return replace(row, sol=sol_text, usd=usd_text, sol_gain=sol, usd_gain=usd, **changes)


def leaderboard(
    timeframe: Timeframe | str, bucket: int, variant: str = "normal", size: int = BIG_ROWS
) -> list[StandinRow]:
    """The rows the page shows, in rank order, for a timeframe (`daily`...) and a time bucket."""
    timeframe = Timeframe(timeframe)
    if variant in ("empty", "error"):
        return []
    price = Decimal(random.Random(f"price:{bucket}").randint(12000, 26000)) / 100
    rows = [
        _base_row(kol, i, timeframe, bucket, price) for i, kol in enumerate(_kols(variant, size))
    ]
    if variant == "odd":
        rows = [_oddify(row, i, price) for i, row in enumerate(rows)]
    # kolscan ranks by SOL gain.
    return sorted(rows, key=lambda r: (-r.sol_gain, r.wallet))


def current_bucket(bucket_seconds: int, now: float | None = None) -> int:
    return int((time.time() if now is None else now) // bucket_seconds)


# --- the page --------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>KOL Leaderboard (stand-in)</title>
<style>
body { font-family: sans-serif; margin: 0; }
.leaderboard_leaderboardUser__8OZpJ, .lb-card { display: flex; gap: 16px; align-items: center;
  height: 56px; padding: 0 16px; border-bottom: 1px solid #ddd; }
.leaderboard_user { display: flex; gap: 8px; color: inherit; text-decoration: none; width: 240px; }
.leaderboard_user h1 { font-size: 16px; margin: 0; }
.win { color: green; } .loss { color: red; }
</style></head>
<body><main class="leaderboard_main">
<h2 class="leaderboard_title">KOL Leaderboard</h2>
<div class="leaderboard_loading">Loading…</div>
<div id="list"></div>
</main>
<script>
const DATA = __DATA__;
function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid);
  return node;
}
function xLinks(r) {
  return r.x.map((h) => el("a", {href: h, target: "_blank", rel: "noreferrer",
                                 "aria-label": "X profile", class: "leaderboard_social"}, "𝕏"));
}
function recordCell(text) {
  const parts = text.split("/");
  if (parts.length !== 2) return el("p", {}, text);
  return el("p", {}, el("span", {class: "win"}, parts[0]), "/",
            el("span", {class: "loss"}, parts[1]));
}
function rowNormal(r) {
  return el("div", {class: "leaderboard_leaderboardUser__8OZpJ"},
    el("a", {href: `/account/${r.w}?timeframe=${DATA.tf}`, class: "leaderboard_user"},
       el("img", {alt: "", width: 24, height: 24}), el("h1", {class: "leaderboard_name"}, r.n)),
    ...xLinks(r),
    el("div", {class: "leaderboard_remark"}, recordCell(r.rec)),
    el("div", {class: "leaderboard_totalProfitNum"},
       el("span", {class: "leaderboard_sol"}, r.sol), " ",
       el("span", {class: "leaderboard_usd"}, r.usd)));
}
function rowChanged(r) {
  const [w, l] = r.rec.split("/");
  return el("div", {class: "lb-card"},
    el("a", {href: `/account/${r.w}`}, el("img", {alt: "", width: 24, height: 24})),
    el("div", {class: "lb-title"}, r.n),
    ...xLinks(r),
    el("div", {class: "lb-stats"}, `W ${w} · L ${l}`),
    el("div", {class: "lb-pnl"}, el("img", {alt: "SOL", width: 12, height: 12}),
       r.sol.replace(/\\s*Sol$/i, "")),
    el("div", {class: "lb-usd"}, r.usd.replace(/^\\(|\\)$/g, "")));
}
const render = DATA.layout === "changed" ? rowChanged : rowNormal;
const list = document.getElementById("list");
let shown = 0, loading = false;
function renderBatch() {
  const end = Math.min(shown + DATA.batchSize, DATA.rows.length);
  const frag = document.createDocumentFragment();
  for (let i = shown; i < end; i++) frag.append(render(DATA.rows[i]));
  list.append(frag);
  shown = end;
  loading = false;
  maybeMore();
}
function nearBottom() {
  return innerHeight + scrollY >= document.documentElement.scrollHeight - 300;
}
function maybeMore() {
  if (loading || shown >= DATA.rows.length || !nearBottom()) return;
  loading = true;
  setTimeout(renderBatch, DATA.batchMs);
}
setTimeout(() => {
  document.querySelector(".leaderboard_loading").remove();
  if (DATA.rows.length === 0) {
    list.append(el("div", {class: "leaderboard_empty"}, "No KOLs found for this timeframe"));
    return;
  }
  renderBatch();
  addEventListener("scroll", maybeMore);
  if (DATA.busyAfterMs !== null) setTimeout(() => { for (;;) {} }, DATA.busyAfterMs);
}, DATA.firstMs);
</script>
</body></html>
"""

_ERROR_PAGE = b"<!doctype html><html><body><h1>500 Internal Server Error</h1></body></html>"


class KolscanStandin:
    """The stand-in server. `with KolscanStandin() as site: scrape(site.base_url)`.

    `bucket` pins the data to one time bucket (tests); otherwise it follows the clock in
    `bucket_seconds` steps. `first_ms` is how late the first rows arrive, `batch_ms` how long a
    scroll batch of `batch_size` rows takes, `slow_ms` the delay of the `slow` variant.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        variant: str = "normal",
        big_rows: int = BIG_ROWS,
        bucket: int | None = None,
        bucket_seconds: int = 300,
        first_ms: int = 300,
        batch_ms: int = 50,
        batch_size: int = 100,
        slow_ms: int = 120_000,
    ) -> None:
        self._lock = threading.Lock()
        self._variant = "normal"
        self._big_rows = big_rows
        self.set_variant(variant)
        self.fixed_bucket = bucket
        self.bucket_seconds = bucket_seconds
        self.first_ms, self.batch_ms, self.batch_size, self.slow_ms = (
            first_ms,
            batch_ms,
            batch_size,
            slow_ms,
        )
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kolscan-standin", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def variant(self) -> str:
        with self._lock:
            return self._variant

    def set_variant(self, variant: str, *, rows: int | None = None) -> None:
        """Switch what the page shows; `rows` sets the size of the `big` variant."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        if rows is not None and rows < len(roster()):
            raise ValueError(f"rows must be at least {len(roster())}")
        with self._lock:
            self._variant = variant
            if rows is not None:
                self._big_rows = rows

    def bucket(self) -> int:
        if self.fixed_bucket is not None:
            return self.fixed_bucket
        return current_bucket(self.bucket_seconds)

    def expected_rows(self, timeframe: Timeframe | str) -> list[StandinRow]:
        """What the page shows right now for `timeframe` (`daily`, `weekly`, `monthly`)."""
        with self._lock:
            variant, size = self._variant, self._big_rows
        return leaderboard(timeframe, self.bucket(), variant, size)

    def page(self, timeframe: Timeframe) -> tuple[int, bytes]:
        with self._lock:
            variant, size = self._variant, self._big_rows
        if variant == "error":
            return HTTPStatus.INTERNAL_SERVER_ERROR, _ERROR_PAGE
        rows = leaderboard(timeframe, self.bucket(), variant, size)
        data = {
            "tf": timeframe.kolscan_param,
            "layout": "changed" if variant == "layout_changed" else "normal",
            "firstMs": self.slow_ms if variant == "slow" else self.first_ms,
            "batchMs": self.batch_ms,
            "batchSize": self.batch_size,
            "busyAfterMs": BUSY_AFTER_MS if variant == "busy" else None,
            "rows": [
                {"w": r.wallet, "n": r.name, "x": list(r.x_hrefs), "rec": r.record}
                | {"sol": r.sol, "usd": r.usd}
                for r in rows
            ],
        }
        script_safe = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
        return HTTPStatus.OK, _PAGE.replace("__DATA__", script_safe).encode()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> KolscanStandin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(site: KolscanStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away (a scraper killed mid-page): nothing to answer

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            timeframe = _BY_PARAM.get(parse_qs(url.query).get("timeframe", ["1"])[0])
            if url.path != "/leaderboard" or timeframe is None:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
            status, body = site.page(timeframe)
            self._send(status, body, "text/html; charset=utf-8")

        def do_POST(self) -> None:
            if self.path != "/__standin__/variant":
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                site.set_variant(body["variant"], rows=body.get("rows"))
            except (ValueError, KeyError, TypeError) as exc:
                self._send(HTTPStatus.BAD_REQUEST, str(exc).encode(), "text/plain")
                return
            self._send(
                HTTPStatus.OK, json.dumps({"variant": site.variant}).encode(), "application/json"
            )

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the kolscan.io stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8601)
    parser.add_argument("--variant", choices=VARIANTS, default="normal")
    parser.add_argument("--bucket-seconds", type=int, default=300)
    parser.add_argument("--big-rows", type=int, default=BIG_ROWS)
    args = parser.parse_args()
    site = KolscanStandin(
        port=args.port,
        variant=args.variant,
        bucket_seconds=args.bucket_seconds,
        big_rows=args.big_rows,
    )
    print(
        f"kolscan stand-in ({site.variant}) at {site.base_url}/leaderboard?timeframe=1", flush=True
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        site.stop()


if __name__ == "__main__":
    main()
