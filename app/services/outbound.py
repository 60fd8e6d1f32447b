"""The one HTTP client for calls to AI providers, built so it cannot be turned against the network.

Every call to a provider (testing a key, listing its models) goes through `get`, which:

- re-checks the URL against the base-URL policy (`normalize_base_url`) at call time, so a provider
  saved before the allowlist changed is judged by today's rules;
- resolves the host once (`resolve`) and refuses the call when ANY address it resolves to is
  refused by `is_blocked_ip` (link-local and cloud metadata always; private, loopback and reserved
  unless `PRIVATE_BASE_URL_ALLOWLIST` lists the address or the host name);
- connects to exactly the address it checked (`connect`), never looking the name up again, so DNS
  rebinding cannot switch it to another address; for https the socket is wrapped with TLS that
  sends SNI for, and verifies the certificate against, the original host name;
- never follows redirects (a 3xx is `unexpected_response`) and never reads proxy settings from
  the environment (it opens its own sockets);
- bounds every step: `OUTBOUND_CONNECT_TIMEOUT` (default 5 s) per connection attempt and TLS
  handshake, `OUTBOUND_READ_TIMEOUT` (10 s) per read, and `OUTBOUND_DEADLINE` (15 s) for the whole
  call including DNS, enforced by a watchdog that shuts the socket down; a 2xx body larger than
  `OUTBOUND_MAX_RESPONSE_BYTES` (1 MiB) is `unexpected_response`;
- never returns or logs what the provider sent: callers get the status code and, for a 2xx
  answer, whatever their `parse` function extracted from the body. Failures are `OutboundError`s
  whose message is a sentence written here, never provider output.

Settings are read from `app.config` only: `app/config.py` fills them in (defaults, environment) and
validates them at start-up. The parsed `PRIVATE_BASE_URL_ALLOWLIST` is `base_urls.current_allowlist()`.

`resolve`, `connect` and `tls_context` are module-level so tests can replace them (a resolver that
answers differently the second time, a connection routed to a local stub, a test CA).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from app.errors import InvalidInput
from app.services.base_urls import Allowlist, current_allowlist, is_blocked_ip, normalize_base_url, parse_allowlist

log = logging.getLogger(__name__)

USER_AGENT = "Switchboard/1 (key test)"
READ_CHUNK = 64 * 1024

# DNS lookups run here so that a resolver that hangs cannot outlive the call's deadline.
_DNS_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="outbound-dns")


class OutboundError(Exception):
    """The call produced no usable answer. `result` is `unreachable`, `timeout` or
    `unexpected_response`; `message` is a sentence for a person, never provider output."""

    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result
        self.message = message


@dataclass(frozen=True)
class Reply:
    """What a caller learns from an answer: its status, and what `parse` made of a 2xx body."""

    status: int
    value: Any = None


@dataclass(frozen=True)
class Limits:
    connect_timeout: float
    read_timeout: float
    deadline: float
    max_response_bytes: int

    @classmethod
    def from_config(cls) -> Limits:
        """The current app's limits, as `app/config.py` validated them at start-up."""
        config = current_app.config
        return cls(
            connect_timeout=float(config["OUTBOUND_CONNECT_TIMEOUT"]),
            read_timeout=float(config["OUTBOUND_READ_TIMEOUT"]),
            deadline=float(config["OUTBOUND_DEADLINE"]),
            max_response_bytes=int(config["OUTBOUND_MAX_RESPONSE_BYTES"]),
        )


# --- the seams tests may replace ---------------------------------------------------------------

def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, without duplicates."""
    found: list[str] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = str(sockaddr[0])
        if ip not in found:
            found.append(ip)
    return found


def connect(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly `ip` (an address, never a name)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tls_context() -> ssl.SSLContext:
    """Certificate and host name verification against the system's trusted CAs."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# --- the client --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str          # lowercase name or address, without brackets
    port: int
    host_header: str   # what the Host header says (the URL's authority)
    request_target: str

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host_header}"


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.aborted = threading.Event()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def bound(self, timeout: float) -> float:
        """`timeout`, shortened to what is left of the deadline. :raise OutboundError: none left."""
        left = self.remaining()
        if left <= 0:
            raise self.error()
        return min(timeout, left)

    def expired(self) -> bool:
        return self.aborted.is_set() or self.remaining() <= 0

    def error(self) -> OutboundError:
        return OutboundError("timeout", f"The provider did not finish answering within {_seconds(self.seconds)}.")


def get(
    url: str,
    headers: Mapping[str, str],
    *,
    parse: Callable[[bytes], Any] | None = None,
    allowlist: str | Allowlist | None = None,
    limits: Limits | None = None,
) -> Reply:
    """GET `url` with `headers` under every rule of this module.

    A 2xx answer's body is read (up to the size cap) only when `parse` is given, and handed to
    it; `parse` raising ValueError (or TypeError, KeyError, RecursionError) makes the answer
    `unexpected_response`. Other statuses are returned without reading the body, except 3xx.

    :raise OutboundError: refused address, DNS or connection failure, timeout, redirect,
        oversized or unparseable body, broken HTTP.
    """
    limits = limits or Limits.from_config()
    allowed = current_allowlist() if allowlist is None else parse_allowlist(allowlist)
    _check_headers(headers)
    deadline = _Deadline(limits.deadline)
    target = _target(url, allowed)
    try:
        addresses = _resolve_allowed(target, allowed, deadline)
        sock = _connect_any(target, addresses, limits, deadline)
        reply = _exchange(sock, target, headers, parse, limits, deadline)
    except OutboundError as error:
        log.info("outbound GET %s: %s", target.origin, error.result)
        raise
    log.info("outbound GET %s: HTTP %s", target.origin, reply.status)
    return reply


def _check_headers(headers: Mapping[str, str]) -> None:
    """Header values we send must be visible ASCII: no CR/LF, nothing http.client would mangle.

    :raise ValueError: callers check secrets before they get here.
    """
    for name, value in headers.items():
        if not all(0x20 <= ord(ch) <= 0x7E for ch in value):
            raise ValueError(f"header {name} holds characters that cannot be sent")


def _target(url: str, allowed: Allowlist) -> _Target:
    try:
        normalized = normalize_base_url(url, allowed, allow_query=True)  # a request URL: its query is the call's own
    except InvalidInput as error:
        raise OutboundError("unreachable", f"The provider's base URL is not allowed. {error.detail or ''}".strip()) from None
    if not normalized:
        raise OutboundError("unreachable", "The provider has no base URL.")
    parts = urlsplit(normalized)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, host, port, parts.netloc, request_target)


def _resolve_allowed(target: _Target, allowed: Allowlist, deadline: _Deadline) -> list[str]:
    """The host's addresses, all of them acceptable. One lookup per call, never repeated."""
    try:
        addresses = [str(ipaddress.ip_address(target.host))]
    except ValueError:
        future = _DNS_POOL.submit(resolve, target.host, target.port)
        try:
            addresses = future.result(timeout=max(deadline.remaining(), 0))
        except TimeoutError:
            future.cancel()
            raise OutboundError("timeout", f"Looking up {target.host} took longer than "
                                           f"{_seconds(deadline.seconds)}.") from None
        except (OSError, UnicodeError, ValueError):
            raise OutboundError("unreachable", f"Could not find the host {target.host} (DNS lookup failed).") from None
    if not addresses:
        raise OutboundError("unreachable", f"Could not find the host {target.host} (DNS lookup failed).")
    if any(is_blocked_ip(ip, allowed, host=target.host) for ip in addresses):
        raise OutboundError(
            "unreachable",
            f"Connections to {target.host} are not allowed: it resolves to a private, loopback, link-local "
            "or reserved address. A self-hosted server must be listed in PRIVATE_BASE_URL_ALLOWLIST.",
        )
    return addresses


def _connect_any(target: _Target, addresses: list[str], limits: Limits, deadline: _Deadline) -> socket.socket:
    """Connect to the first checked address that answers; wrap it in TLS for https."""
    timed_out = False
    for ip in addresses:
        try:
            sock = connect(ip, target.port, deadline.bound(limits.connect_timeout))
        except TimeoutError:
            timed_out = True
            continue
        except OSError:
            continue
        if target.scheme != "https":
            return sock
        return _wrap_tls(sock, target, limits, deadline)
    if timed_out:
        raise OutboundError("timeout", f"{target.host} did not accept a connection within "
                                       f"{_seconds(limits.connect_timeout)}.")
    raise OutboundError("unreachable", f"Could not connect to {target.host} on port {target.port}.")


def _wrap_tls(sock: socket.socket, target: _Target, limits: Limits, deadline: _Deadline) -> socket.socket:
    try:
        tls = tls_context().wrap_socket(sock, server_hostname=target.host, do_handshake_on_connect=False)
    except (OSError, ValueError):
        sock.close()
        raise OutboundError("unreachable", f"Could not open a secure (TLS) connection to {target.host}.") from None
    try:
        tls.settimeout(deadline.bound(limits.connect_timeout))
        tls.do_handshake()
    except ssl.SSLCertVerificationError:
        tls.close()
        raise OutboundError("unreachable", f"The TLS certificate of {target.host} could not be verified.") from None
    except TimeoutError:
        tls.close()
        raise OutboundError("timeout", f"{target.host} did not complete the TLS handshake within "
                                       f"{_seconds(limits.connect_timeout)}.") from None
    except (OSError, ssl.SSLError):
        tls.close()
        raise OutboundError("unreachable", f"Could not open a secure (TLS) connection to {target.host}.") from None
    except OutboundError:
        tls.close()
        raise
    return tls


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket we opened ourselves; it never connects on its own."""

    auto_open = 0

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        super().__init__(host, port)
        self.sock = sock

    def connect(self) -> None:
        raise http.client.NotConnected("the connection is opened by the outbound client only")


def _abort(sock: socket.socket, deadline: _Deadline) -> None:
    """Watchdog: at the deadline, shut the socket down so any blocked read returns at once."""
    deadline.aborted.set()
    # The plain socket method, also on an SSLSocket: it shuts the file descriptor down
    # without touching the TLS object another thread is reading through.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _exchange(
    sock: socket.socket,
    target: _Target,
    headers: Mapping[str, str],
    parse: Callable[[bytes], Any] | None,
    limits: Limits,
    deadline: _Deadline,
) -> Reply:
    watchdog = threading.Timer(max(deadline.remaining(), 0), _abort, (sock, deadline))
    watchdog.daemon = True
    watchdog.start()
    conn = _PinnedConnection(sock, target.host, target.port)
    response: http.client.HTTPResponse | None = None
    try:
        sock.settimeout(deadline.bound(limits.read_timeout))
        conn.putrequest("GET", target.request_target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", target.host_header)
        conn.putheader("User-Agent", USER_AGENT)
        conn.putheader("Accept", "application/json")
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        status = response.status
        if 300 <= status < 400:
            raise OutboundError("unexpected_response", f"The provider answered with a redirect (HTTP {status}), "
                                                       "which is never followed. Check the base URL.")
        if not 200 <= status < 300 or parse is None:
            return Reply(status)
        body = _read_capped(response, sock, limits, deadline)
    except OutboundError:
        raise
    except TimeoutError:
        if deadline.expired():
            raise deadline.error() from None
        raise OutboundError("timeout", f"The provider did not answer within {_seconds(limits.read_timeout)}.") from None
    except (http.client.HTTPException, OSError):
        if deadline.expired():
            raise deadline.error() from None
        raise OutboundError("unexpected_response",
                            "The provider's answer was not a complete, valid HTTP response.") from None
    finally:
        watchdog.cancel()
        if response is not None:
            response.close()
        conn.close()
        sock.close()
    try:
        value = parse(body)
    except (ValueError, TypeError, KeyError, RecursionError):
        raise OutboundError("unexpected_response", "The provider's answer was not in the expected format.") from None
    return Reply(status, value)


def _read_capped(response: http.client.HTTPResponse, sock: socket.socket, limits: Limits, deadline: _Deadline) -> bytes:
    cap = limits.max_response_bytes
    too_large = OutboundError("unexpected_response", f"The provider's answer was larger than {cap:,} bytes.")
    declared = response.getheader("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > cap:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    while not response.isclosed():  # it closes (and releases the socket) once the body is read
        sock.settimeout(deadline.bound(limits.read_timeout))
        chunk = response.read(min(READ_CHUNK, cap + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > cap:
            raise too_large
        chunks.append(chunk)
    if deadline.expired():
        raise deadline.error()  # the watchdog cut the body short
    if response.length:  # the connection closed before Content-Length bytes arrived
        raise OutboundError("unexpected_response", "The provider's answer was not a complete, valid HTTP response.")
    return b"".join(chunks)


def _seconds(value: float) -> str:
    text = f"{value:g}"
    return f"{text} second" + ("" if text == "1" else "s")
