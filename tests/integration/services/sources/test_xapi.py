"""The X API client over real HTTP against the stand-in: every success path and every fault gives
the right typed result after the right number of attempts; rate limits are read and honoured; the
token never leaks."""

from __future__ import annotations

import datetime as dt
import logging
import math
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from config import PROJECT_ROOT, get_settings
from services.errors import ErrorCode
from services.sources.xapi import (
    BATCH_ENDPOINT,
    IDS_ENDPOINT,
    SINGLE_ENDPOINT,
    XApiClient,
    XApiError,
    XInvalidHandle,
    XInvalidUserId,
    XMalformedResponse,
    XRateLimited,
    XRequestError,
    XRequestRejected,
    XServiceFailure,
    XUnauthorized,
    XUnavailable,
    XUser,
    XUserError,
    XUserNotFound,
    XUserSuspended,
)
from standins.roster import roster
from standins.xapi_standin import XApiStandin, followers_at, user_id

TOKEN = "tok-Sup3rSecret-0123456789"
HANDLES = [k.x_handle for k in roster() if k.x_handle]
MakeClient = Callable[..., XApiClient]


@pytest.fixture()
def standin() -> Iterator[XApiStandin]:
    with XApiStandin(token=TOKEN) as s:
        yield s


@pytest.fixture()
def make_client(standin: XApiStandin) -> Iterator[MakeClient]:
    clients: list[XApiClient] = []

    def make(**overrides: object) -> XApiClient:
        options: dict[str, object] = {
            "base_url": standin.base_url,
            "bearer_token": TOKEN,
            "connect_timeout": 0.5,
            "read_timeout": 0.3,
            "max_retries": 2,
            "max_wait_s": 2.0,
            "backoff_base_s": 0.01,
        }
        options.update(overrides)
        client = XApiClient(**options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _sent(standin: XApiStandin) -> int:
    return len(standin.requests)


# -- the failures' classes -------------------------------------------------------------------------

KINDS: dict[type[XApiError], type[XApiError]] = {
    XUnauthorized: XServiceFailure,
    XRateLimited: XServiceFailure,
    XUnavailable: XServiceFailure,
    XMalformedResponse: XApiError,
    XUserNotFound: XUserError,
    XUserSuspended: XUserError,
    XInvalidHandle: XRequestError,
    XInvalidUserId: XRequestError,
    XRequestRejected: XRequestError,
}


def _leaves(cls: type[XApiError]) -> set[type[XApiError]]:
    subs = cls.__subclasses__()
    return {leaf for sub in subs for leaf in _leaves(sub)} if subs else {cls}


def test_each_failure_class_says_its_kind_and_whether_a_later_call_may_work() -> None:
    assert _leaves(XApiError) == set(KINDS)
    assert all(issubclass(cls, kind) for cls, kind in KINDS.items())
    transient = {cls for cls in KINDS if cls.transient}
    assert transient == {XUnauthorized, XRateLimited, XUnavailable, XMalformedResponse}
    assert {cls.code for cls in KINDS} >= {
        ErrorCode.X_API_UNAUTHORIZED,
        ErrorCode.X_API_RATE_LIMITED,
        ErrorCode.X_API_UNAVAILABLE,
        ErrorCode.X_USER_NOT_FOUND,
        ErrorCode.X_USER_SUSPENDED,
    }


# -- success paths --------------------------------------------------------------------------------


def test_get_user_returns_the_user_with_its_follower_count(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_followers("cented_sol", 12_345)
    before = dt.datetime.now(dt.UTC)
    user = make_client().get_user("Cented_sol")
    assert user == XUser(
        id=user_id("cented_sol"),
        username="cented_sol",
        name="Cented_Sol",
        followers=12_345,
        fetched_at=user.fetched_at,
    )
    assert before <= user.fetched_at <= dt.datetime.now(dt.UTC)
    assert [r.endpoint for r in standin.requests] == [SINGLE_ENDPOINT]


def test_batch_gives_one_result_per_handle_and_one_bad_handle_fails_alone(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("suspended", handles=["jijo_sol"])
    standin.set_followers("cupsey_sol", 7)
    asked = ["CUPSEY_sol", "cupsey_sol", "jijo_sol", "nobody_here", "bad-handle", "euris_sol"]
    results = make_client().get_users(asked)

    assert set(results) == set(asked)
    assert isinstance(results["CUPSEY_sol"], XUser) and results["CUPSEY_sol"].followers == 7
    assert results["cupsey_sol"] == results["CUPSEY_sol"]
    assert isinstance(results["jijo_sol"], XUserSuspended)
    assert isinstance(results["nobody_here"], XUserNotFound)
    assert isinstance(results["bad-handle"], XInvalidHandle)
    assert isinstance(results["euris_sol"], XUser)
    # One request, without the invalid handle and without asking twice for cupsey.
    [request] = standin.requests
    assert request.endpoint == BATCH_ENDPOINT
    assert sorted(request.usernames) == ["cupsey_sol", "euris_sol", "jijo_sol", "nobody_here"]


def test_batches_are_split_at_100() -> None:
    many = [f"kol_{i:04d}" for i in range(250)]
    with (
        XApiStandin(token=TOKEN, handles=many) as standin,
        XApiClient(standin.base_url, TOKEN, read_timeout=2, max_retries=0) as client,
    ):
        results = client.get_users(many)
        assert [len(r.usernames) for r in standin.requests] == [100, 100, 50]
    assert all(isinstance(results[h], XUser) for h in many)


def test_handles_that_x_cannot_have_are_refused_before_sending(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    client = make_client()
    for bad in ["", "a" * 16, "has space", "dash-ed", "émile", "semi;colon"]:
        with pytest.raises(XInvalidHandle) as err:
            client.get_user(bad)
        assert err.value.code == ErrorCode.INVALID_INPUT
    results = client.get_users(["a" * 16, "x.y"])
    assert len(results) == 2 and all(isinstance(r, XInvalidHandle) for r in results.values())
    assert _sent(standin) == 0


# -- lookup by X user id (the account a follower market pinned) -----------------------------------


def test_lookup_by_id_gives_one_result_per_id_and_one_bad_id_fails_alone(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("suspended", handles=["jijo_sol"])
    standin.set_followers("cupsey_sol", 7)
    cupsey, jijo, euris = user_id("cupsey_sol"), user_id("jijo_sol"), user_id("euris_sol")
    asked = [cupsey, cupsey, jijo, "12345", "not-an-id", "1" * 20, euris]
    results = make_client().get_users_by_id(asked)

    assert set(results) == set(asked)
    got = results[cupsey]
    assert isinstance(got, XUser)
    assert got == XUser(cupsey, "cupsey_sol", "Cupsey_Sol", 7, got.fetched_at)
    assert isinstance(results[jijo], XUserSuspended) and jijo in results[jijo].message
    assert isinstance(results["12345"], XUserNotFound) and "user 12345" in results["12345"].message
    assert isinstance(results["not-an-id"], XInvalidUserId)
    assert isinstance(results["1" * 20], XInvalidUserId)
    assert isinstance(results[euris], XUser) and results[euris].username == "euris_sol"
    # One request, without the invalid ids and without asking twice for cupsey.
    [request] = standin.requests
    assert request.endpoint == IDS_ENDPOINT
    assert sorted(request.ids) == sorted([cupsey, jijo, "12345", euris])


def test_lookup_by_id_is_split_at_100_and_has_its_own_budget() -> None:
    many = [f"kol_{i:04d}" for i in range(250)]
    ids = [user_id(h) for h in many]
    with (
        XApiStandin(token=TOKEN, handles=many, rate_limit=2) as standin,
        XApiClient(standin.base_url, TOKEN, max_retries=0, max_wait_s=0.1) as client,
    ):
        assert isinstance(client.get_users(many[:1])[many[0]], XUser)
        results = client.get_users_by_id(ids)
        assert [len(r.ids) for r in standin.requests] == [0, 100, 100]
        by_id = client.rate_limit(IDS_ENDPOINT)
        assert by_id is not None and by_id.remaining == 0
    assert all(isinstance(results[i], XUser) for i in ids[:200])
    assert all(isinstance(results[i], XRateLimited) for i in ids[200:])  # no third request


@pytest.mark.parametrize(
    ("fault", "error", "sent"),
    [
        ("error_500", XUnavailable, 3),
        ("unauthorized", XUnauthorized, 1),
        ("rate_limit", XRateLimited, 1),
        ("malformed", XMalformedResponse, 1),
    ],
)
def test_lookup_by_id_fails_as_the_other_lookups_do(
    standin: XApiStandin,
    make_client: MakeClient,
    fault: str,
    error: type[XApiError],
    sent: int,
) -> None:
    standin.set_fault(fault)
    ids = [user_id("cented_sol"), user_id("ansem_sol")]
    results = make_client(max_retries=2, max_wait_s=0.2).get_users_by_id(ids)
    assert all(isinstance(results[i], error) for i in ids)
    assert _sent(standin) == sent


def test_a_missing_follower_count_by_id_is_malformed_not_zero(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("missing_fields", handles=["loopier_sol"])
    loopier, gake = user_id("loopier_sol"), user_id("gake_sol")
    results = make_client().get_users_by_id([loopier, gake])
    assert isinstance(results[loopier], XMalformedResponse)
    assert isinstance(results[gake], XUser)


# -- per-user errors (HTTP 200 with an errors array) ----------------------------------------------


def test_unknown_handle_is_not_found(standin: XApiStandin, make_client: MakeClient) -> None:
    with pytest.raises(XUserNotFound) as err:
        make_client().get_user("nobody_here")
    assert err.value.code == ErrorCode.X_USER_NOT_FOUND
    assert not err.value.transient
    assert _sent(standin) == 1


def test_suspended_handle_is_suspended(standin: XApiStandin, make_client: MakeClient) -> None:
    standin.set_fault("suspended", handles=["ansem_sol"])
    with pytest.raises(XUserSuspended) as err:
        make_client().get_user("ansem_sol")
    assert err.value.code == ErrorCode.X_USER_SUSPENDED
    assert _sent(standin) == 1


# -- service failures -----------------------------------------------------------------------------


def test_wrong_token_is_unauthorized_and_not_retried(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    with pytest.raises(XUnauthorized) as err:
        make_client(bearer_token="wrong-token").get_user("cented_sol")
    assert err.value.code == ErrorCode.X_API_UNAUTHORIZED
    assert _sent(standin) == 1
    assert not standin.requests[0].authorized


def test_unauthorized_fault_fails_the_whole_batch_without_more_requests(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("unauthorized")
    many = [*HANDLES, *(f"extra_{i}" for i in range(150))]
    results = make_client().get_users(many)
    assert all(isinstance(r, XUnauthorized) for r in results.values())
    assert _sent(standin) == 1


def test_no_token_configured_sends_nothing(standin: XApiStandin, make_client: MakeClient) -> None:
    with pytest.raises(XUnauthorized):
        make_client(bearer_token="").get_user("cented_sol")
    assert _sent(standin) == 0


def test_server_errors_are_retried_then_succeed(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("error_500", count=2)
    user = make_client(max_retries=2).get_user("cented_sol")
    assert user.username == "cented_sol"
    assert _sent(standin) == 3


def test_server_errors_past_the_retries_are_unavailable(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("error_500")
    with pytest.raises(XUnavailable) as err:
        make_client(max_retries=3).get_user("cented_sol")
    assert err.value.attempts == 4
    assert err.value.code == ErrorCode.X_API_UNAVAILABLE
    assert _sent(standin) == 4


def test_backoff_never_sleeps_past_the_wait_bound(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("error_500")
    started = time.monotonic()
    with pytest.raises(XUnavailable):
        make_client(max_retries=3, backoff_base_s=30, max_wait_s=0.3).get_user("cented_sol")
    assert time.monotonic() - started < 0.3 + 0.5  # the bound, plus four quick local requests
    assert _sent(standin) == 4


def test_timeouts_are_retried_then_unavailable(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("timeout", delay_s=1.0)
    started = time.monotonic()
    with pytest.raises(XUnavailable) as err:
        make_client(read_timeout=0.2, max_retries=1).get_user("cented_sol")
    assert "timed out" in err.value.message
    assert err.value.attempts == 2
    assert _sent(standin) == 2
    assert time.monotonic() - started < 1.5  # two read timeouts, not two full server delays


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = XApiClient(
        f"http://127.0.0.1:{port}", TOKEN, connect_timeout=0.3, max_retries=2, backoff_base_s=0.01
    )
    with client, pytest.raises(XUnavailable) as err:
        client.get_user("cented_sol")
    assert err.value.attempts == 3
    assert "connection failed" in err.value.message


def test_malformed_json_is_malformed(standin: XApiStandin, make_client: MakeClient) -> None:
    standin.set_fault("malformed", count=1)
    client = make_client()
    with pytest.raises(XMalformedResponse) as err:
        client.get_user("cented_sol")
    assert err.value.code == ErrorCode.X_API_MALFORMED
    assert _sent(standin) == 1


def test_a_malformed_batch_fails_its_own_handles_only() -> None:
    many = [f"kol_{i:04d}" for i in range(150)]
    with (
        XApiStandin(token=TOKEN, handles=many) as standin,
        XApiClient(standin.base_url, TOKEN, max_retries=0) as client,
    ):
        standin.set_fault("malformed", count=1)
        results = client.get_users(many)
        assert len(standin.requests) == 2
    assert all(isinstance(results[h], XMalformedResponse) for h in many[:100])
    assert all(isinstance(results[h], XUser) for h in many[100:])


def test_a_user_without_public_metrics_is_malformed_not_zero(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("missing_fields", handles=["loopier_sol"])
    results = make_client().get_users(["loopier_sol", "gake_sol"])
    assert isinstance(results["loopier_sol"], XMalformedResponse)
    assert isinstance(results["gake_sol"], XUser)
    with pytest.raises(XMalformedResponse):
        make_client().get_user("loopier_sol")


# -- rate limits ----------------------------------------------------------------------------------


def test_budget_is_read_from_headers(standin: XApiStandin, make_client: MakeClient) -> None:
    client = make_client()
    assert client.rate_limit(SINGLE_ENDPOINT) is None
    client.get_user("cented_sol")
    client.get_user("cented_sol")
    budget = client.rate_limit(SINGLE_ENDPOINT)
    assert budget is not None
    assert (budget.limit, budget.remaining) == (300, 298)
    assert budget.reset_at > dt.datetime.now(dt.UTC)
    assert client.rate_limit(BATCH_ENDPOINT) is None  # budgets are per endpoint


def test_spent_budget_means_no_request_before_the_reset() -> None:
    with (
        XApiStandin(token=TOKEN, rate_limit=2, window_s=1) as standin,
        XApiClient(
            standin.base_url, TOKEN, read_timeout=1, max_retries=2, max_wait_s=0.1
        ) as client,
    ):
        client.get_user("cented_sol")
        client.get_user("jijo_sol")
        budget = client.rate_limit(SINGLE_ENDPOINT)
        assert budget is not None and budget.remaining == 0
        with pytest.raises(XRateLimited) as err:
            client.get_user("cupsey_sol")
        assert err.value.reset_at == budget.reset_at
        assert len(standin.requests) == 2  # refused locally, nothing sent
        # The other endpoint has its own budget.
        assert isinstance(client.get_users(["cupsey_sol"])["cupsey_sol"], XUser)

        time.sleep(max(0.0, (budget.reset_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
        assert client.get_user("cupsey_sol").username == "cupsey_sol"
        assert standin.requests[-1].at >= budget.reset_at.timestamp()
        assert len(standin.requests) == 4


def test_429_is_waited_out_when_the_reset_is_within_the_bound(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("rate_limit", count=1, reset_in_s=1)
    client = make_client(max_wait_s=3.0)
    user = client.get_user("cented_sol")
    assert user.username == "cented_sol"
    first, second = standin.requests
    assert second.at >= math.ceil(first.at + 1)  # not before the advertised reset


def test_429_beyond_the_wait_bound_raises_at_once_and_blocks_further_calls(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    standin.set_fault("rate_limit", count=1, reset_in_s=60)
    client = make_client(max_wait_s=0.5)
    started = time.monotonic()
    with pytest.raises(XRateLimited) as err:
        client.get_user("cented_sol")
    assert time.monotonic() - started < 0.5
    reset_at = err.value.reset_at
    assert reset_at is not None
    assert 55 <= (reset_at - dt.datetime.now(dt.UTC)).total_seconds() <= 61
    assert err.value.code == ErrorCode.X_API_RATE_LIMITED
    with pytest.raises(XRateLimited):
        client.get_user("jijo_sol")
    assert _sent(standin) == 1


def test_a_client_unaware_of_the_spent_budget_gets_429_and_waits_for_the_reset() -> None:
    with XApiStandin(token=TOKEN, rate_limit=1, window_s=1) as standin:
        with XApiClient(standin.base_url, TOKEN, max_retries=0) as first:
            first.get_user("cented_sol")
        with XApiClient(standin.base_url, TOKEN, max_retries=1, max_wait_s=3) as second:
            assert second.get_user("jijo_sol").username == "jijo_sol"
        served, refused, retried = (r.at for r in standin.requests)
        assert refused < math.ceil(served + 1) <= retried  # the 429, then nothing before reset


def test_batch_stops_at_a_spent_budget_and_reports_it_per_handle() -> None:
    many = [f"kol_{i:04d}" for i in range(250)]
    with (
        XApiStandin(token=TOKEN, handles=many, rate_limit=1) as standin,
        XApiClient(standin.base_url, TOKEN, max_retries=0, max_wait_s=0.1) as client,
    ):
        results = client.get_users(many)
        assert len(standin.requests) == 1
    assert all(isinstance(results[h], XUser) for h in many[:100])
    assert all(isinstance(results[h], XRateLimited) for h in many[100:])


# -- configuration, credentials and the stand-in --------------------------------------------------


def test_defaults_come_from_configuration(
    standin: XApiStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X_API_BASE_URL", standin.base_url + "/")
    monkeypatch.setenv("X_API_BEARER_TOKEN", TOKEN)
    monkeypatch.setenv("X_API_MAX_RETRIES", "1")
    get_settings.cache_clear()
    try:
        with XApiClient() as client:
            assert client.base_url == standin.base_url
            assert client.max_retries == 1
            assert client.get_user("cented_sol").username == "cented_sol"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_the_token_never_appears_in_logs_errors_or_reprs(
    standin: XApiStandin, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    errors: list[XApiError] = []
    for kind in ("error_500", "malformed", "rate_limit", "unauthorized", "timeout"):
        standin.clear_faults()
        standin.set_fault(kind, count=5, delay_s=0.5, reset_in_s=60)
        fresh = make_client(max_retries=1)
        try:
            fresh.get_user("cented_sol")
        except XApiError as exc:
            errors.append(exc)
    standin.clear_faults()
    errors.extend(
        e for e in client.get_users(["nobody_x", "bad-handle"]).values() if isinstance(e, XApiError)
    )
    assert len(errors) == 7
    texts = [caplog.text, repr(client), str(client.endpoint_statuses())]
    texts += [f"{e!s} {e!r} {e.details!r} {e.args!r}" for e in errors]
    assert all(TOKEN not in text for text in texts)
    assert "Bearer" not in caplog.text


def test_control_plane_over_http_switches_faults_and_counts_requests(
    standin: XApiStandin, make_client: MakeClient
) -> None:
    client = make_client(max_retries=0)
    reply = httpx.post(
        f"{standin.base_url}/__standin__/fault", json={"kind": "error_500", "count": 1}
    )
    assert reply.status_code == 200
    with pytest.raises(XUnavailable):
        client.get_user("cented_sol")
    assert client.get_user("cented_sol").username == "cented_sol"
    assert (
        httpx.post(f"{standin.base_url}/__standin__/fault", json={"kind": "nope"}).status_code
        == 400
    )
    counted = httpx.get(f"{standin.base_url}/__standin__/requests").json()
    assert counted["count"] == 2


def test_stand_in_counts_change_over_time_mostly_up_sometimes_down() -> None:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    changes = [followers_at(h, start + day) - followers_at(h, start) for h in HANDLES]
    assert sum(c > 0 for c in changes) > len(changes) // 2
    assert any(c < 0 for c in changes)
    assert followers_at("cented_sol", start) == followers_at("CENTED_SOL", start)
    minute = dt.timedelta(minutes=1)
    assert len({followers_at("cented_sol", start + i * minute) for i in range(10)}) > 1


def test_the_cli_stand_in_serves_another_process_and_takes_faults_over_http() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins.xapi_standin", "--port", str(port), "--token", TOKEN],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{base}/__standin__/requests", timeout=0.5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "stand-in did not start"
                time.sleep(0.1)
        with XApiClient(base, TOKEN, max_retries=0) as client:
            assert client.get_user("cented_sol").followers > 0
            httpx.post(f"{base}/__standin__/fault", json={"kind": "suspended", "count": 1})
            with pytest.raises(XUserSuspended):
                client.get_user("cented_sol")
            assert client.get_user("cented_sol").username == "cented_sol"
        assert httpx.get(f"{base}/__standin__/requests").json()["count"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)
