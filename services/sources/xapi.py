"""X API v2 user lookup over httpx: typed failures, bounded retries, rate limits read from headers.

Users are looked up by username (one, or up to 100 a request) or by X user id (up to 100 a
request): an id never changes with a rename, so it is how an account pinned earlier is read again.

Every failure is an `XApiError` (a `ServiceError` with an `ErrorCode`); nothing returns None or 0
for a failure. Rate limits are never hard-coded: each response's `x-rate-limit-*` headers are
remembered per endpoint, and while an endpoint's budget is exhausted the client refuses to call it
before the advertised reset. Sleeping inside one public call (retry backoff, waiting out a 429) is
bounded by `max_wait_s`, so a call takes at most
`(max_retries + 1) * (connect_timeout + read_timeout) + max_wait_s`.

The bearer token lives only in the httpx client's default headers, which httpx masks in reprs; no
message, log line or repr made here contains it.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import httpx

from config import get_settings
from services.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)

HANDLE_RE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
USER_ID_RE = re.compile(r"^[0-9]{1,19}$")  # X user ids are 64-bit integers, sent as strings
MAX_BATCH = 100
# Endpoint names as X documents its rate limits: one budget per endpoint.
SINGLE_ENDPOINT = "GET /2/users/by/username/:username"
BATCH_ENDPOINT = "GET /2/users/by"
IDS_ENDPOINT = "GET /2/users"
_FIELDS = {"user.fields": "public_metrics"}
_RESET_MARGIN_S = 0.02


# -- failures -------------------------------------------------------------------------------------


class XApiError(ServiceError):
    """Any failure to get a user's numbers from the X API.

    As with httpx's exceptions, the class says what kind of failure it is, one level below this:
    - `XServiceFailure`: X did not serve the call at all (credentials, rate limit, outage);
    - `XMalformedResponse`: X answered, but not with the JSON it documents;
    - `XUserError`: X answered about the user (not found, suspended);
    - `XRequestError`: the request can never succeed as made (invalid handle, another 4xx).

    `transient` is the one place that says whether the same call may succeed later without
    anything changing about the user at X: true for the first two kinds, false for the others.
    Every class below states it.
    """

    code: ErrorCode = ErrorCode.X_API_UNAVAILABLE
    transient: ClassVar[bool] = True

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(type(self).code, message, **details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# -- X did not serve the call: a batch stops at the first one, the rest would fail the same way.


class XServiceFailure(XApiError):
    """X itself refused or failed the call; calling again later may work."""

    transient = True


class XUnauthorized(XServiceFailure):
    """401/403 or no token configured: bad credentials are never retried within a call, but
    a later call works once the credentials are fixed."""

    code = ErrorCode.X_API_UNAUTHORIZED
    transient = True


class XRateLimited(XServiceFailure):
    """A 429, or the remembered budget is spent. `reset_at` is when calling may resume (None when
    X did not say)."""

    code = ErrorCode.X_API_RATE_LIMITED
    transient = True

    def __init__(self, message: str, *, reset_at: dt.datetime | None) -> None:
        super().__init__(message, reset_at=reset_at)
        self.reset_at = reset_at


class XUnavailable(XServiceFailure):
    """5xx, timeouts or connection errors, still failing after the bounded retries."""

    code = ErrorCode.X_API_UNAVAILABLE
    transient = True

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message, attempts=attempts)
        self.attempts = attempts


# -- X answered, but not as documented: a fault on its side that a later call may not repeat.


class XMalformedResponse(XApiError):
    """A body that is not the JSON X documents: unparsable, or missing a needed field."""

    code = ErrorCode.X_API_MALFORMED
    transient = True


# -- X answered about the user: asking again gives the same answer.


class XUserError(XApiError):
    """X says the account cannot be read: it does not exist or is suspended."""

    transient = False


class XUserNotFound(XUserError):
    code = ErrorCode.X_USER_NOT_FOUND
    transient = False


class XUserSuspended(XUserError):
    code = ErrorCode.X_USER_SUSPENDED
    transient = False


# -- the request itself is wrong: sending it again cannot help.


class XRequestError(XApiError):
    """A request X can never answer as made."""

    transient = False


class XInvalidHandle(XRequestError):
    """The handle is not a possible X username; nothing was sent."""

    code = ErrorCode.INVALID_INPUT
    transient = False


class XInvalidUserId(XRequestError):
    """The id is not a possible X user id; nothing was sent."""

    code = ErrorCode.INVALID_INPUT
    transient = False


class XRequestRejected(XRequestError):
    """Another 4xx, or a per-user error of a kind this client does not know."""

    code = ErrorCode.X_API_REJECTED
    transient = False


# -- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XUser:
    id: str
    username: str
    name: str
    followers: int
    fetched_at: dt.datetime  # UTC, when the response arrived


@dataclass(frozen=True)
class RateLimit:
    limit: int
    remaining: int
    reset_at: dt.datetime

    def exhausted(self, now: dt.datetime) -> bool:
        return self.remaining <= 0 and self.reset_at > now


@dataclass(frozen=True)
class EndpointStatus:
    """What the client last learned about one endpoint; what the dashboard shows."""

    endpoint: str
    rate_limit: RateLimit | None
    last_status: str  # "OK" or the ErrorCode of the last call's failure
    last_error: str | None
    at: dt.datetime


def is_valid_handle(handle: str) -> bool:
    return isinstance(handle, str) and HANDLE_RE.fullmatch(handle) is not None


def is_valid_user_id(user_id: str) -> bool:
    return isinstance(user_id, str) and USER_ID_RE.fullmatch(user_id) is not None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rate_limit(headers: httpx.Headers) -> RateLimit | None:
    """The `x-rate-limit-*` headers, or None when any is absent or not an integer."""
    try:
        limit = int(headers["x-rate-limit-limit"])
        remaining = int(headers["x-rate-limit-remaining"])
        reset = int(headers["x-rate-limit-reset"])
        reset_at = dt.datetime.fromtimestamp(reset, dt.UTC)
    except (KeyError, ValueError, OverflowError, OSError):
        return None
    return RateLimit(limit=limit, remaining=remaining, reset_at=reset_at)


def _parse_user(obj: Any, fetched_at: dt.datetime) -> XUser:
    if not isinstance(obj, Mapping):
        raise XMalformedResponse("user object is not a JSON object")
    metrics = obj.get("public_metrics")
    followers = metrics.get("followers_count") if isinstance(metrics, Mapping) else None
    fields = (obj.get("id"), obj.get("username"), obj.get("name"))
    if not all(isinstance(f, str) and f for f in fields):
        raise XMalformedResponse("user object lacks id, username or name")
    if type(followers) is not int or followers < 0:
        raise XMalformedResponse(
            f"user {obj['username']!r} has no valid public_metrics.followers_count"
        )
    return XUser(
        id=obj["id"],
        username=obj["username"],
        name=obj["name"],
        followers=followers,
        fetched_at=fetched_at,
    )


def _user_error(who: str, entry: Any) -> XApiError:
    """One entry of X's `errors` array about `who` ("@alice", "user 123"), as the failure it
    describes."""
    if not isinstance(entry, Mapping):
        return XMalformedResponse(f"{who}: error entry is not a JSON object")
    detail = str(entry.get("detail") or entry.get("title") or "no detail")
    kind = str(entry.get("type") or "")
    if "suspended" in detail.lower():
        return XUserSuspended(f"{who} is suspended: {detail}")
    if kind.endswith("/resource-not-found"):
        return XUserNotFound(f"{who} not found: {detail}")
    return XRequestRejected(f"{who}: {detail}")


def _entry_key(entry: Any) -> str | None:
    """The handle (lower-cased) or id an `errors` entry is about."""
    if not isinstance(entry, Mapping):
        return None
    value = entry.get("value") or entry.get("resource_id")
    return value.lower() if isinstance(value, str) else None


@dataclass(frozen=True)
class _Lookup:
    """One batched way of naming users: by usernames or by ids."""

    endpoint: str
    path: str
    param: str
    valid: Callable[[str], bool]
    invalid: Callable[[str], XApiError]
    key: Callable[[str], str]  # what a name asked for is matched on
    answers: str  # the user object's field that names it
    who: Callable[[str], str]  # a key, as messages say it


_BY_USERNAMES = _Lookup(
    BATCH_ENDPOINT,
    "/2/users/by",
    "usernames",
    is_valid_handle,
    lambda h: XInvalidHandle(f"{h!r} is not a valid X handle"),
    str.lower,
    "username",
    lambda key: f"@{key}",
)
_BY_IDS = _Lookup(
    IDS_ENDPOINT,
    "/2/users",
    "ids",
    is_valid_user_id,
    lambda i: XInvalidUserId(f"{i!r} is not a valid X user id"),
    str,
    "id",
    lambda key: f"user {key}",
)


# -- the client -----------------------------------------------------------------------------------


class XApiClient:
    """User lookup against X API v2. Thread-safe; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        bearer_token: str | None = None,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int | None = None,
        max_wait_s: float | None = None,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 4.0,
    ) -> None:
        settings = get_settings()
        self.base_url = (base_url or settings.x_api_base_url).rstrip("/")
        token = settings.x_api_bearer_token if bearer_token is None else bearer_token
        connect = settings.x_api_connect_timeout_s if connect_timeout is None else connect_timeout
        read = settings.x_api_read_timeout_s if read_timeout is None else read_timeout
        self.max_retries = settings.x_api_max_retries if max_retries is None else max_retries
        self.max_wait_s = settings.x_api_max_wait_s if max_wait_s is None else max_wait_s
        if min(connect, read) <= 0 or self.max_retries < 0 or self.max_wait_s < 0:
            raise ValueError("timeouts must be positive, max_retries and max_wait_s non-negative")
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._has_token = bool(token)
        headers = {"User-Agent": "kolops-xapi/1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read, connect=connect),
            follow_redirects=False,
        )
        self._lock = threading.Lock()
        self._status: dict[str, EndpointStatus] = {}

    def __repr__(self) -> str:
        return f"XApiClient(base_url={self.base_url!r})"

    def __enter__(self) -> XApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- budget and health ------------------------------------------------------------------------

    def rate_limit(self, endpoint: str) -> RateLimit | None:
        """The endpoint's budget as of its last response (None before any response said)."""
        with self._lock:
            status = self._status.get(endpoint)
        return status.rate_limit if status else None

    def endpoint_statuses(self) -> list[EndpointStatus]:
        with self._lock:
            return list(self._status.values())

    def _update(self, endpoint: str, **changes: Any) -> None:
        with self._lock:
            old = self._status.get(endpoint) or EndpointStatus(
                endpoint, rate_limit=None, last_status="UNKNOWN", last_error=None, at=_utcnow()
            )
            self._status[endpoint] = replace(old, at=_utcnow(), **changes)

    # -- one request, with retries ----------------------------------------------------------------

    def _get(
        self, endpoint: str, path: str, params: dict[str, str], deadline: float
    ) -> dict[str, Any]:
        """GET and return the JSON object of a 200; every other outcome raises an XApiError."""
        try:
            body = self._get_with_retries(endpoint, path, params, deadline)
        except XApiError as exc:
            self._update(endpoint, last_status=exc.code.value, last_error=exc.message)
            raise
        self._update(endpoint, last_status="OK", last_error=None)
        return body

    def _get_with_retries(
        self, endpoint: str, path: str, params: dict[str, str], deadline: float
    ) -> dict[str, Any]:
        if not self._has_token:
            raise XUnauthorized("X_API_BEARER_TOKEN is not set; nothing was sent")
        attempt = 0
        while True:
            budget = self.rate_limit(endpoint)
            if budget is not None and budget.exhausted(_utcnow()):
                raise XRateLimited(
                    f"{endpoint}: budget of {budget.limit} spent until {budget.reset_at:%H:%M:%S}Z",
                    reset_at=budget.reset_at,
                )
            attempt += 1
            try:
                response = self._http.get(path, params=params)
            except httpx.TimeoutException as exc:
                failure = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                failure = f"connection failed ({type(exc).__name__})"
            else:
                limit = _rate_limit(response.headers)
                if limit is not None:
                    self._update(endpoint, rate_limit=limit)
                status = response.status_code
                if status == 200:
                    return self._json(response)
                if status in (401, 403):
                    raise XUnauthorized(f"{endpoint}: HTTP {status}, credentials refused")
                if status == 429:
                    self._wait_for_reset(endpoint, response, attempt, deadline)
                    continue
                if status < 500:
                    raise XRequestRejected(f"{endpoint}: HTTP {status}")
                failure = f"HTTP {status}"
            if attempt > self.max_retries:
                raise XUnavailable(
                    f"{endpoint}: {failure} after {attempt} attempts", attempts=attempt
                )
            # Full jitter: retries from many callers spread out instead of arriving together.
            backoff = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
            delay = min(random.uniform(0, backoff), max(0.0, deadline - time.monotonic()))
            log.warning("X API %s: %s; retry %d in %.2fs", endpoint, failure, attempt, delay)
            time.sleep(delay)

    def _wait_for_reset(
        self, endpoint: str, response: httpx.Response, attempt: int, deadline: float
    ) -> None:
        """After a 429: sleep until the reset when that fits in the wait bound, else raise."""
        limit = _rate_limit(response.headers)
        reset_at = limit.reset_at if limit else None
        if limit is not None:
            # A 429 means the budget is spent, whatever the remaining header says.
            self._update(endpoint, rate_limit=replace(limit, remaining=0))
        error = XRateLimited(
            f"{endpoint}: HTTP 429 rate limited until "
            + (f"{reset_at:%H:%M:%S}Z" if reset_at else "an unknown time"),
            reset_at=reset_at,
        )
        if reset_at is None or attempt > self.max_retries:
            raise error
        # A little past the reset, so the wall clock has surely passed it when we call again.
        wait = max(0.0, (reset_at - _utcnow()).total_seconds()) + _RESET_MARGIN_S
        if wait > deadline - time.monotonic():
            raise error
        log.warning("X API %s: rate limited; waiting %.2fs for the reset", endpoint, wait)
        time.sleep(wait)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise XMalformedResponse(
                f"HTTP {response.status_code} body is not JSON ({len(response.content)} bytes)"
            ) from None
        if not isinstance(body, dict):
            raise XMalformedResponse("response body is not a JSON object")
        return body

    def _deadline(self) -> float:
        return time.monotonic() + self.max_wait_s

    # -- lookups ----------------------------------------------------------------------------------

    def get_user(self, handle: str) -> XUser:
        """One user by username; raises an XApiError subclass on every failure."""
        if not is_valid_handle(handle):
            raise XInvalidHandle(f"{handle!r} is not a valid X handle")
        body = self._get(
            SINGLE_ENDPOINT, f"/2/users/by/username/{handle}", dict(_FIELDS), self._deadline()
        )
        fetched_at = _utcnow()
        if "data" in body:
            user = _parse_user(body["data"], fetched_at)
            if user.username.lower() != handle.lower():
                raise XMalformedResponse(f"asked for @{handle}, got @{user.username}")
            return user
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            raise _user_error(f"@{handle}", errors[0])
        raise XMalformedResponse("response has neither data nor errors")

    def get_users(self, handles: Iterable[str]) -> dict[str, XUser | XApiError]:
        """Many users, at most 100 per request; one result per handle as given (matched without
        regard to case). A failure of the service itself (credentials, rate limit, outage) ends the
        lookup: the handles not yet asked get that same error, without another request."""
        return self._lookup_many(_BY_USERNAMES, handles)

    def get_users_by_id(self, user_ids: Iterable[str]) -> dict[str, XUser | XApiError]:
        """Many users by their X user ids (which renames never change), batched and failing as
        `get_users` does; one result per id as given."""
        return self._lookup_many(_BY_IDS, user_ids)

    def _lookup_many(self, how: _Lookup, names: Iterable[str]) -> dict[str, XUser | XApiError]:
        results: dict[str, XUser | XApiError] = {}
        spellings: dict[str, list[str]] = {}
        for name in names:
            if how.valid(name):
                spellings.setdefault(how.key(name), []).append(name)
            else:
                results[name] = how.invalid(name)
        keys = list(spellings)
        deadline = self._deadline()
        stop: XApiError | None = None
        for start in range(0, len(keys), MAX_BATCH):
            chunk = keys[start : start + MAX_BATCH]
            outcome: Mapping[str, XUser | XApiError]
            if stop is not None:
                outcome = dict.fromkeys(chunk, stop)
            else:
                try:
                    outcome = self._lookup_chunk(how, chunk, deadline)
                except XServiceFailure as exc:
                    stop = exc
                    outcome = dict.fromkeys(chunk, exc)
                except XApiError as exc:
                    outcome = dict.fromkeys(chunk, exc)
            for key, result in outcome.items():
                for name in spellings[key]:
                    results[name] = result
        return results

    def _lookup_chunk(
        self, how: _Lookup, chunk: list[str], deadline: float
    ) -> dict[str, XUser | XApiError]:
        params = {how.param: ",".join(chunk), **_FIELDS}
        body = self._get(how.endpoint, how.path, params, deadline)
        fetched_at = _utcnow()
        data = body.get("data", [])
        errors = body.get("errors", [])
        if not isinstance(data, list) or not isinstance(errors, list):
            raise XMalformedResponse("data or errors is not a list")
        wanted = set(chunk)
        found: dict[str, XUser | XApiError] = {}
        for obj in data:
            name = obj.get(how.answers) if isinstance(obj, Mapping) else None
            key = how.key(name) if isinstance(name, str) else None
            if key in wanted:
                try:
                    found[key] = _parse_user(obj, fetched_at)
                except XMalformedResponse as exc:
                    found[key] = exc
        for entry in errors:
            key = _entry_key(entry)
            if key in wanted and key not in found:
                found[key] = _user_error(how.who(key), entry)
        return {
            key: found.get(key) or XMalformedResponse(f"{how.who(key)} is absent from the response")
            for key in chunk
        }
