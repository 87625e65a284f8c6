"""A STAND-IN for a team's OpenID Connect identity provider: a real OIDC provider on 127.0.0.1,
for tests and the demo only. Whoever uses its sign-in form is whoever they type.

- `GET /.well-known/openid-configuration`: the discovery document (authorization code flow,
  S256 PKCE, client_secret_basic or client_secret_post, RS256 ID tokens).
- `GET /authorize`: checks the client id, the registered redirect URI and the PKCE challenge,
  then shows a small form to type an email, a name and whether the email is verified;
  `POST /authorize` answers with a redirect carrying a one-time code and the state.
- `POST /token`: checks the client secret, the code (once, within a minute, for this client),
  the redirect URI it was issued for and the PKCE verifier; answers with an RS256-signed ID token
  (iss, sub, aud, iat, exp, nonce, email, email_verified, name) and an access token.
- `GET /jwks`: the public key.

    python -m standins.oidc_standin --port 8604 --client-id ID --client-secret SECRET \\
        --redirect-uri http://127.0.0.1:8501/oauth2callback
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey

CODE_TTL_S = 60
TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class _Grant:
    """What a code was issued for."""

    client_id: str
    redirect_uri: str
    nonce: str | None
    challenge: str | None
    email: str
    verified: bool
    name: str
    issued: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: OidcStandin


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: object, **headers: str) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", **headers)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        return dict(parse_qsl(self.rfile.read(length).decode() if length else ""))

    def do_GET(self) -> None:
        standin = self.server.standin
        parts = urlsplit(self.path)
        if parts.path == "/.well-known/openid-configuration":
            self._json(200, standin.metadata())
        elif parts.path == "/jwks":
            self._json(200, {"keys": [standin.key.as_dict(private=False)]})
        elif parts.path == "/authorize":
            params = dict(parse_qsl(parts.query))
            error = standin.check_request(params)
            if error:
                self._send(400, error.encode(), "text/plain; charset=utf-8")
            else:
                self._send(200, standin.sign_in_form(params).encode(), "text/html; charset=utf-8")
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        standin = self.server.standin
        path = urlsplit(self.path).path
        if path == "/authorize":
            params = self._form()
            error = standin.check_request(params) or (
                "" if params.get("email", "").strip() else "type an email"
            )
            if error:
                self._send(400, error.encode(), "text/plain; charset=utf-8")
                return
            self.send_response(302)
            self.send_header("Location", standin.issue_code(params))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/token":
            status, body = standin.exchange(self._form(), self.headers.get("Authorization"))
            self._json(status, body)
        else:
            self._json(404, {"error": "not found"})


class OidcStandin:
    """The provider in a background thread: `with OidcStandin(...) as idp: idp.metadata_url`."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str] | None = None,
        port: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        # Registered redirect URIs; a test adds the dashboard's once it knows its port.
        self.redirect_uris = list(redirect_uris or [])
        self.key = RSAKey.generate_key(
            2048,
            parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"},
            private=True,
        )
        self._codes: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.standin = self
        self._thread: threading.Thread | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def metadata(self) -> dict[str, object]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "email", "email_verified", "name"],
        }

    # -- authorize ---------------------------------------------------------------------------

    def check_request(self, params: dict[str, str]) -> str:
        """Why an authorization request is refused ('' when it is fine)."""
        if params.get("client_id") != self.client_id:
            return "unknown client_id"
        if params.get("redirect_uri") not in self.redirect_uris:
            return "redirect_uri is not registered for this client"
        if params.get("response_type") != "code":
            return "response_type must be code"
        if "openid" not in params.get("scope", "").split():
            return "scope must include openid"
        if params.get("code_challenge") and params.get("code_challenge_method") != "S256":
            return "only the S256 code challenge is supported"
        return ""

    def sign_in_form(self, params: dict[str, str]) -> str:
        carried = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
        )
        return f"""<!doctype html>
<html><head><title>Stand-in identity provider</title></head>
<body style="font-family:sans-serif;max-width:26rem;margin:3rem auto">
<h1>Stand-in identity provider</h1>
<p>For tests and the demo: you are whoever you type.</p>
<form method="post" action="/authorize">{carried}
  <label>Email<br><input name="email" type="email" required style="width:100%"></label><br><br>
  <label>Name<br><input name="name" style="width:100%"></label><br><br>
  <label><input name="email_verified" type="checkbox" value="true" checked>
    email verified</label><br><br>
  <button type="submit">Sign in</button>
</form></body></html>"""

    def issue_code(self, params: dict[str, str]) -> str:
        """Remember a code for this sign-in; the redirect URI to send the browser to."""
        code = secrets.token_urlsafe(24)
        email = params["email"].strip()
        grant = _Grant(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            nonce=params.get("nonce") or None,
            challenge=params.get("code_challenge") or None,
            email=email,
            verified=params.get("email_verified") == "true",
            name=params.get("name", "").strip() or email.split("@")[0],
            issued=time.time(),
        )
        with self._lock:
            self._codes[code] = grant
        query = {"code": code, **({"state": params["state"]} if params.get("state") else {})}
        return f"{grant.redirect_uri}?{urlencode(query)}"

    # -- token -------------------------------------------------------------------------------

    def _client(self, form: dict[str, str], authorization: str | None) -> tuple[str, str]:
        if authorization and authorization.startswith("Basic "):
            raw = base64.b64decode(authorization[6:]).decode()
            client_id, _, secret = raw.partition(":")
            return unquote(client_id), unquote(secret)
        return form.get("client_id", ""), form.get("client_secret", "")

    def exchange(
        self, form: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, object]]:
        """Answer a token request: (HTTP status, JSON body)."""
        client_id, secret = self._client(form, authorization)
        if client_id != self.client_id or not hmac.compare_digest(secret, self.client_secret):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # a code works once
        if (
            grant is None
            or grant.client_id != client_id
            or time.time() - grant.issued > CODE_TTL_S
            or grant.redirect_uri != form.get("redirect_uri")
        ):
            return 400, {"error": "invalid_grant"}
        if grant.challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or not hmac.compare_digest(_s256(verifier), grant.challenge):
                return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": "sub-" + hashlib.sha256(grant.email.lower().encode()).hexdigest()[:24],
            "aud": client_id,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "email": grant.email,
            "email_verified": grant.verified,
            "name": grant.name,
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        return 200, {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_S,
            "id_token": id_token,
        }

    # -- running -----------------------------------------------------------------------------

    def start(self) -> OidcStandin:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="oidc-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OidcStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8604)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", action="append", required=True)
    args = parser.parse_args()
    standin = OidcStandin(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uris=args.redirect_uri,
        port=args.port,
    )
    print(f"OIDC stand-in at {standin.issuer}", flush=True)
    standin._server.serve_forever()


if __name__ == "__main__":
    main()
