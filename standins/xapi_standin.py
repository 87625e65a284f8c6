"""A STAND-IN for the X API v2 user lookup. Not X: a local HTTP server for tests and the demo.

It serves `GET /2/users/by/username/{username}`, `GET /2/users/by?usernames=...` and
`GET /2/users?ids=...` on 127.0.0.1 with X's JSON shapes and `x-rate-limit-*` headers, checks the
bearer token (401 when wrong), keeps a real request budget per endpoint and window (429 once
spent), and refuses more than 100 usernames or ids per batch as X does. The users are the shared
roster's handles (`standins.roster`), each with an id that is a pure function of its handle
(`user_id`); their follower counts are a pure function of the handle and a time bucket
(`followers_at`): mostly growing, with a per-bucket wobble, and for some handles a falling trend,
so follower markets resolve both ways.

Faults can be switched on for the next N API requests (for the per-handle kinds: the next N
lookups of their handles) or until cleared, from Python
(`XApiStandin.set_fault`) or from another process (`POST /__standin__/fault` with JSON
`{"kind": ..., "count": N | null, "handles": [...], "delay_s": ..., "reset_in_s": ...}`):

- `error_500`: HTTP 500.            - `timeout`: answer only after `delay_s` seconds.
- `rate_limit`: 429, remaining 0, reset in `reset_in_s` seconds.
- `unauthorized`: 401.              - `malformed`: HTTP 200 whose body is not JSON.
- `missing_fields`: HTTP 200, users without `public_metrics`.
- `not_found`, `suspended`: HTTP 200 with an `errors` array entry for the named `handles` (all
  handles of the request when none are named), as X reports them.

Faults name handles; on the by-id endpoint they apply to the ids of those handles.

`POST /__standin__/clear` removes every fault, `POST /__standin__/followers` pins a handle's
count (`{"handle": ..., "followers": N}`), `GET /__standin__/requests` returns the API requests
received. Run it with `python -m standins.xapi_standin --port 8602 --token demo-token`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from standins.roster import roster

log = logging.getLogger(__name__)

EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SINGLE = "GET /2/users/by/username/:username"
BATCH = "GET /2/users/by"
IDS = "GET /2/users"
REQUEST_FAULTS = ("error_500", "timeout", "rate_limit", "unauthorized", "malformed")
HANDLE_FAULTS = ("not_found", "suspended", "missing_fields")
_PROBLEMS = "https://api.twitter.com/2/problems"


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def followers_at(handle: str, when: dt.datetime, *, bucket_s: int = 60) -> int:
    """The stand-in's follower count of `handle` at `when`: a base, a per-handle trend per hour
    (from -3 to +19: mostly growing) and a wobble of up to ±200 per time bucket."""
    key = handle.lower()
    seed = _digest("base", key)
    base = 50_000 + seed % 450_000
    trend_per_hour = (seed >> 32) % 23 - 3
    bucket = math.floor((when - EPOCH).total_seconds() / bucket_s)
    wobble = _digest("wobble", key, bucket) % 401 - 200
    return max(0, base + math.floor(trend_per_hour * bucket * bucket_s / 3600) + wobble)


def user_id(handle: str) -> str:
    return str(10**17 + _digest("id", handle.lower()) % (9 * 10**17))


@dataclass
class Fault:
    kind: str
    count: int | None  # requests left; None: until cleared
    handles: frozenset[str] = frozenset()
    delay_s: float = 2.0
    reset_in_s: int = 60

    def applies_to(self, handles: Iterable[str]) -> bool:
        return not self.handles or any(h in self.handles for h in handles)


@dataclass(frozen=True)
class RequestRecord:
    at: float  # epoch seconds when received
    endpoint: str
    usernames: tuple[str, ...]  # by id: the handles of the ids asked (an unknown id as is)
    authorized: bool
    ids: tuple[str, ...] = ()


@dataclass
class _Window:
    used: int = 0
    reset: int = 0  # epoch seconds, as advertised


@dataclass
class _State:
    token: str
    users: dict[str, str]  # lower-cased handle -> username as X spells it
    ids: dict[str, str]  # user id -> lower-cased handle
    limit: int
    window_s: int
    bucket_s: int
    faults: list[Fault] = field(default_factory=list)
    pinned: dict[str, int] = field(default_factory=dict)
    windows: dict[str, _Window] = field(default_factory=dict)
    log: list[RequestRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, kinds: tuple[str, ...], handles: Iterable[str]) -> Fault | None:
        """The first active fault of one of `kinds` that concerns these handles; uses it once."""
        handles = list(handles)
        for fault in self.faults:
            if fault.kind in kinds and fault.applies_to(handles):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def spend(self, endpoint: str, now: float) -> tuple[bool, dict[str, str]]:
        """Use one request of the endpoint's budget: (allowed, rate-limit headers)."""
        window = self.windows.setdefault(endpoint, _Window())
        if now >= window.reset:
            window.used, window.reset = 0, math.ceil(now + self.window_s)
        allowed = window.used < self.limit
        window.used += allowed
        return allowed, _limit_headers(self.limit, self.limit - window.used, window.reset)


def _limit_headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {
        "x-rate-limit-limit": str(limit),
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(reset),
    }


def _error_entry(value: str, kind: str, parameter: str = "username") -> dict[str, Any]:
    """X's `errors` entry about the user asked for as `value` (a username, or an id)."""
    if kind == "suspended":
        detail, title = f"User has been suspended: [{value}].", "Forbidden"
    else:
        detail, title = f"Could not find user with {parameter}: [{value}].", "Not Found Error"
    return {
        "value": value,
        "detail": detail,
        "title": title,
        "resource_type": "user",
        "parameter": parameter,
        "resource_id": value,
        "type": f"{_PROBLEMS}/resource-not-found",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("xapi stand-in: " + format, *args)

    def _send(
        self, status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout fault): nothing to answer

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    # -- control plane (for tests and the demo; no token) -----------------------------------------

    def do_POST(self) -> None:
        standin = self.server.standin
        path = urlsplit(self.path).path
        try:
            body = self._json_body()
            if path == "/__standin__/fault":
                standin.set_fault(
                    body["kind"],
                    count=body.get("count"),
                    handles=body.get("handles") or (),
                    delay_s=float(body.get("delay_s", 2.0)),
                    reset_in_s=int(body.get("reset_in_s", 60)),
                )
            elif path == "/__standin__/clear":
                standin.clear_faults()
            elif path == "/__standin__/followers":
                standin.set_followers(body["handle"], int(body["followers"]))
            else:
                self._send(404, {"error": "unknown control path"})
                return
        except (KeyError, TypeError, ValueError) as exc:
            self._send(400, {"error": f"bad control request: {exc}"})
            return
        self._send(200, {"ok": True})

    # -- the API ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/__standin__/requests":
            records = self.server.standin.requests
            self._send(200, {"count": len(records), "requests": [asdict(r) for r in records]})
            return
        if url.path.startswith("/2/users/by/username/"):
            endpoint, names = SINGLE, [url.path.rsplit("/", 1)[1]]
        elif url.path == "/2/users/by":
            endpoint = BATCH
            names = [u for v in query.get("usernames", []) for u in v.split(",") if u]
        elif url.path == "/2/users":
            endpoint = IDS
            names = [i for v in query.get("ids", []) for i in v.split(",") if i]
        else:
            self._send(404, {"title": "Not Found Error", "type": "about:blank", "status": 404})
            return
        self._api(endpoint, names)

    def _api(self, endpoint: str, names: list[str]) -> None:
        """Answer a lookup of `names`: usernames, or user ids on the by-id endpoint."""
        state = self.server.state
        authorized = self.headers.get("authorization") == f"Bearer {state.token}"
        now = time.time()
        by_id = endpoint == IDS
        with state.lock:
            # Faults name handles: an id stands for the handle it belongs to.
            keys = [state.ids.get(n, n) if by_id else n.lower() for n in names]
            usernames, ids = (tuple(keys), tuple(names)) if by_id else (tuple(names), ())
            state.log.append(RequestRecord(now, endpoint, usernames, authorized, ids))
            if not authorized:
                fault: Fault | None = Fault("unauthorized", None)
            else:
                fault = state.take_fault(REQUEST_FAULTS, keys)
        if fault is not None:
            self._fault(fault, now)
            return
        if not names or len(names) > 100:
            self._send(
                400,
                {
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": f"{_PROBLEMS}/invalid-request",
                },
            )
            return
        data: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with state.lock:
            allowed, headers = state.spend(endpoint, now)
            if allowed:
                for name in names:
                    entry = self._user_by_id(name, now) if by_id else self._user(name, now)
                    (data if "id" in entry else errors).append(entry)
        if not allowed:
            self._send(429, {"title": "Too Many Requests", "status": 429}, headers)
            return
        if endpoint == SINGLE:
            body: dict[str, Any] = {"data": data[0]} if data else {"errors": errors}
        else:
            body = {k: v for k, v in (("data", data), ("errors", errors)) if v}
        self._send(200, body, headers)

    def _user_by_id(self, asked: str, now: float) -> dict[str, Any]:
        """The user with the id `asked`, or X's error entry about that id."""
        handle = self.server.state.ids.get(asked)
        if handle is None:
            return _error_entry(asked, "not_found", "ids")
        return self._user(handle, now, (asked, "ids"))

    def _user(self, name: str, now: float, asked: tuple[str, str] | None = None) -> dict[str, Any]:
        """One user object or error entry; the caller holds the state lock. `asked` is the
        value and parameter an error entry names (default: the username)."""
        state = self.server.state
        key = name.lower()
        value, parameter = asked or (name, "username")
        fault = state.take_fault(HANDLE_FAULTS, [key])
        if key not in state.users or (fault and fault.kind == "not_found"):
            return _error_entry(value, "not_found", parameter)
        if fault and fault.kind == "suspended":
            return _error_entry(value, "suspended", parameter)
        username = state.users[key]
        user: dict[str, Any] = {"id": user_id(key), "name": username.title(), "username": username}
        if not (fault and fault.kind == "missing_fields"):
            followers = state.pinned.get(key)
            if followers is None:
                when = dt.datetime.fromtimestamp(now, dt.UTC)
                followers = followers_at(key, when, bucket_s=state.bucket_s)
            user["public_metrics"] = {
                "followers_count": followers,
                "following_count": 400 + _digest("following", key) % 2000,
                "tweet_count": 1000 + _digest("tweets", key) % 50_000,
                "listed_count": _digest("listed", key) % 300,
            }
        return user

    def _fault(self, fault: Fault, now: float) -> None:
        if fault.kind == "unauthorized":
            self._send(401, {"title": "Unauthorized", "type": "about:blank", "status": 401})
        elif fault.kind == "error_500":
            self._send(500, {"title": "Internal Server Error", "status": 500})
        elif fault.kind == "timeout":
            time.sleep(fault.delay_s)
            self._send(503, {"title": "Service Unavailable", "status": 503})
        elif fault.kind == "rate_limit":
            state = self.server.state
            headers = _limit_headers(state.limit, 0, math.ceil(now + fault.reset_in_s))
            self._send(429, {"title": "Too Many Requests", "status": 429}, headers)
        else:  # malformed
            self._send(200, b'{"data": [{"id": "1", "username": ')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State
    standin: XApiStandin


class XApiStandin:
    """The stand-in X API in a background thread: `with XApiStandin() as x: x.base_url ...`."""

    def __init__(
        self,
        *,
        token: str = "standin-token",
        port: int = 0,
        handles: Iterable[str] | None = None,
        rate_limit: int = 300,
        window_s: int = 900,
        bucket_s: int = 60,
    ) -> None:
        names = [k.x_handle for k in roster() if k.x_handle] if handles is None else list(handles)
        self.token = token
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.state = _State(
            token=token,
            users={n.lower(): n for n in names},
            ids={user_id(n): n.lower() for n in names},
            limit=rate_limit,
            window_s=window_s,
            bucket_s=bucket_s,
        )
        self._server.standin = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> XApiStandin:
        # A short poll interval so that stop() returns promptly.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="xapi-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> XApiStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_fault(
        self,
        kind: str,
        *,
        count: int | None = None,
        handles: Iterable[str] = (),
        delay_s: float = 2.0,
        reset_in_s: int = 60,
    ) -> None:
        """Fail the next `count` API requests (None: until cleared) in the way `kind` names."""
        if kind not in REQUEST_FAULTS + HANDLE_FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for 'until cleared'")
        fault = Fault(kind, count, frozenset(h.lower() for h in handles), delay_s, reset_in_s)
        with self._server.state.lock:
            self._server.state.faults.append(fault)

    def clear_faults(self) -> None:
        with self._server.state.lock:
            self._server.state.faults.clear()

    def set_followers(self, handle: str, followers: int) -> None:
        """Pin a handle's follower count (a test or demo needing a known number)."""
        if followers < 0:
            raise ValueError("followers must be non-negative")
        with self._server.state.lock:
            self._server.state.pinned[handle.lower()] = followers

    def followers(self, handle: str, when: dt.datetime) -> int:
        """What the stand-in serves for `handle` at `when`."""
        state = self._server.state
        with state.lock:
            pinned = state.pinned.get(handle.lower())
        return pinned if pinned is not None else followers_at(handle, when, bucket_s=state.bucket_s)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every API request received so far (control requests excluded)."""
        with self._server.state.lock:
            return list(self._server.state.log)


def main() -> None:
    parser = argparse.ArgumentParser(description="Stand-in X API v2 (not X) on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8602)
    parser.add_argument("--token", required=True, help="the bearer token clients must send")
    parser.add_argument("--rate-limit", type=int, default=300, help="requests per window")
    parser.add_argument("--window-s", type=int, default=900)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    standin = XApiStandin(
        token=args.token, port=args.port, rate_limit=args.rate_limit, window_s=args.window_s
    )
    log.info("X API stand-in (not X) serving on %s", standin.base_url)
    try:
        standin._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        standin._server.server_close()


if __name__ == "__main__":
    main()
