"""A real OpenID provider for the single sign-on tests, and a relay in front of it.

- `OidcProvider`: the PyPI package `oidc-provider-mock` run as its own process on 127.0.0.1 (an
  OS-chosen port, read from the line the server prints once it listens: no polling, no sleeps).
  Any client id and secret are accepted; users and their claims are set with `PUT /users/<sub>`
  (`set_user`); its authorization page signs in whoever is named in the posted `sub`. It puts
  every claim of the user in the ID token (and answers them at userinfo), signs with RS256 and
  its JWKS, and sets `iss` from the Host it is called with.
- `Relay`: a transparent HTTP relay on loopback that the app is pointed at instead of the
  provider. It passes everything through (keeping the Host header, so the provider's issuer and
  endpoints are the relay's URL) and keeps what went through, so a test can see the codes,
  tokens and PKCE verifier that were exchanged and check that none of them leaks. On request it
  presents another client's credentials at the token endpoint (`audience`: the provider then
  issues an ID token for that client), corrupts the ID token's signature (`tamper_signature`),
  or holds requests without answering (`hang`). Stopping it closes its port: the provider is
  then unreachable; starting it again reopens the same port.
- `SsoBrowser`: what a browser does between the app (a Flask test client) and the provider's
  authorization page.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from tests.support import PROJECT_ROOT

_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


class OidcProvider:
    """`python -m oidc_provider_mock` on an OS-chosen loopback port."""

    def __init__(self, *, token_max_age: int | None = None):
        self.token_max_age = token_max_age
        self.process: subprocess.Popen | None = None
        self._drainer: threading.Thread | None = None
        self.port = 0
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OidcProvider:
        args = [sys.executable, "-m", "oidc_provider_mock", "--port", "0"]
        if self.token_max_age is not None:
            args.append(f"--token-max-age={self.token_max_age}")
        self.process = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1",
                                                        "PYTHONWARNINGS": "ignore"})
        for line in self.process.stderr:  # blocks until the server says where it listens, or exits
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            self.process.wait(timeout=10)
            raise RuntimeError("oidc-provider-mock did not start:\n" + "".join(self.output[-20:]))
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        return self

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.output.append(line)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        self.process.stderr.close()

    def set_user(self, sub: str, **claims) -> None:
        """Create or replace the provider's user `sub` with these claims (email, email_verified,
        name, groups...)."""
        status, _headers, _body = request(self.url, "PUT", f"/users/{quote(sub, safe='')}",
                                          json.dumps(claims).encode(), {"Content-Type": "application/json"})
        assert status == 204, status


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request (no redirects followed): status, headers (lower-case names), body."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@dataclass
class Exchange:
    method: str
    path: str
    request_body: bytes
    status: int
    response_body: bytes


@dataclass
class Relay:
    upstream: str
    port: int = 0
    audience: str | None = None
    tamper_signature: bool = False
    hang: bool = False
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                relay._forward(self)

            do_POST = do_PUT = do_GET

        ThreadingHTTPServer.allow_reuse_address = True
        self._released.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port (connections to it are refused from now on) and let held requests go."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    # --- what went through ------------------------------------------------------------------------

    def hits(self, path: str) -> int:
        return sum(1 for e in self.exchanges if urlsplit(e.path).path == path)

    def secrets(self) -> list[str]:
        """Every code, token and PKCE verifier that went through (none may appear anywhere else)."""
        found = []
        for e in self.exchanges:
            if urlsplit(e.path).path != "/oauth2/token":
                continue
            form = parse_qs(e.request_body.decode())
            found += form.get("code", []) + form.get("code_verifier", [])
            with contextlib.suppress(ValueError):
                answer = json.loads(e.response_body)
                found += [answer[k] for k in ("access_token", "id_token", "refresh_token") if isinstance(answer.get(k), str)]
        return found

    def token_request(self) -> dict[str, list[str]]:
        return next(parse_qs(e.request_body.decode()) for e in self.exchanges if e.path == "/oauth2/token")

    # --- relaying -----------------------------------------------------------------------------------

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        if self.hang:
            self._released.wait(timeout=30)
            handler.close_connection = True
            return
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        path = urlsplit(handler.path).path
        if path == "/oauth2/token" and self.audience:
            credentials = base64.b64encode(f"{quote(self.audience)}:any-secret".encode()).decode()
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = f"Basic {credentials}"
        status, answer_headers, answer = request(self.upstream, handler.command, handler.path, body, headers)
        if path == "/oauth2/token" and self.tamper_signature and status == 200:
            answer = _tampered(answer)
        self.exchanges.append(Exchange(handler.command, handler.path, body, status, answer))
        handler.send_response(status)
        for name, value in answer_headers.items():
            if name not in _HOP_BY_HOP:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)


def _tampered(answer: bytes) -> bytes:
    """The token answer with one bit of the ID token's signature flipped."""
    token = json.loads(answer)
    header, payload, signature = token["id_token"].split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    token["id_token"] = ".".join((header, payload, base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")))
    return json.dumps(token).encode()


class SsoBrowser:
    """A person's browser going through SSO: the app is a Flask test client, the provider's
    authorization page is posted to as its form does."""

    def __init__(self, client):
        self.client = client
        self.responses = []

    def start(self, next: str | None = None):
        """Click "Sign in with SSO"; return the app's answer (a redirect to the provider)."""
        response = self.client.get("/auth/oidc/login", query_string={"next": next} if next else None)
        self.responses.append(response)
        return response

    def authorize(self, authorize_url: str, sub: str, *, client_id: str | None = None, deny: bool = False) -> str:
        """Sign in as `sub` on the provider's page (optionally for another client id); return the
        URL the provider sends the browser back to."""
        parts = urlsplit(authorize_url)
        query = parts.query
        if client_id is not None:
            params = parse_qs(query)
            params["client_id"] = [client_id]
            query = urlencode(params, doseq=True)
        form = {"action": "deny"} if deny else {"sub": sub}
        status, headers, _ = request(f"{parts.scheme}://{parts.netloc}", "POST", f"{parts.path}?{query}",
                                     urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 302, status
        return headers["location"]

    def finish(self, callback_url: str):
        response = self.client.get(callback_url)
        self.responses.append(response)
        return response

    def sign_in(self, sub: str, next: str | None = None):
        """The whole round trip; returns the app's last answer."""
        started = self.start(next)
        assert started.status_code == 302, started.status_code
        return self.finish(self.authorize(started.headers["Location"], sub))
