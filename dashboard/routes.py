"""The login and logout routes: plain HTML form POSTs, answered with the session cookie and a
redirect. The cookie is HttpOnly (no script can read it), SameSite=Strict (no other site can
send it) and Secure when served over HTTPS (or SESSION_COOKIE_SECURE). And the single sign-on
button's route, which remembers the page it was pressed on before `st.login` starts."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from config import get_settings
from services.errors import ServiceError
from services.ops import auth
from services.ops.sessions import COOKIE

LOGIN_PATH = "/auth/login"
LOGOUT_PATH = "/auth/logout"
SSO_PATH = "/auth/sso"
# The query parameter on which the login page starts single sign-on (st.login) at once.
SSO_START = "sso"
# The page a single sign-on was started from: Streamlit's callback always returns to the root,
# so the shell opens this page once the sign-in is back. Lax: it rides the provider's redirect.
AFTER_SSO = "kolops_after_sso"
AFTER_SSO_SECONDS = 600
# The query parameter the login form reads to say why the last attempt failed.
LOGIN_ERROR = "login_error"


def local_target(value: object) -> str:
    """A path on this site to go to after login ('/' for anything else: an absolute URL, a
    scheme-relative '//host', a backslash trick), without a stale login error."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(c) < 32 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != LOGIN_ERROR]
    return parts.path + (f"?{urlencode(query)}" if query else "")


def _with_error(target: str, code: str) -> str:
    return target + ("&" if "?" in target else "?") + urlencode({LOGIN_ERROR: code})


def _same_origin(request: Request) -> bool:
    """A form posted from this site (browsers send Origin with every POST); refuses login CSRF."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser: nothing to forge
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def _secure(request: Request) -> bool:
    return get_settings().session_cookie_secure or request.url.scheme == "https"


def _return_to(request: Request) -> str:
    """The page the form was posted from (its Referer, on this site), where the browser goes
    back to: a pasted deep link survives the login, and nothing of it is echoed into the page."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.headers.get("host", ""):
        return "/"
    return local_target(referer.path + (f"?{referer.query}" if referer.query else ""))


async def login(request: Request) -> Response:
    if not _same_origin(request):
        return PlainTextResponse("cross-site login refused", status_code=403)
    form = await request.form()
    target = _return_to(request)
    client = request.client.host if request.client else None
    try:
        _, token = await run_in_threadpool(
            auth.log_in, str(form.get("username") or ""), str(form.get("password") or ""), client
        )
    except ServiceError as exc:
        return RedirectResponse(_with_error(target, exc.code.value), status_code=303)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=get_settings().session_max_hours * 3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


async def logout(request: Request) -> Response:
    if not _same_origin(request):
        return PlainTextResponse("cross-site logout refused", status_code=403)
    await run_in_threadpool(auth.log_out, request.cookies.get(COOKIE))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


async def sso(request: Request) -> Response:
    """The single sign-on button: remember the page it was pressed on (its Referer, on this
    site), then let the login page start `st.login`."""
    if not get_settings().sso_configured:
        return RedirectResponse("/", status_code=303)
    response = RedirectResponse("/?" + urlencode({SSO_START: "1"}), status_code=303)
    response.set_cookie(
        AFTER_SSO,
        quote(_return_to(request), safe=""),  # letters, digits and %XX: nothing to quote
        max_age=AFTER_SSO_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    return response


ROUTES = [
    Route(LOGIN_PATH, login, methods=["POST"]),
    Route(LOGOUT_PATH, logout, methods=["POST"]),
    Route(SSO_PATH, sso, methods=["GET"]),
]
