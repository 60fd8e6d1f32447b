"""The outbound HTTP client: what reaches the network, and what never does.

Every test runs against stub servers on 127.0.0.1 (tests/support/stub_provider.py, started by the `stubs`
fixture of conftest); the resolver and the connection function are replaced where a test needs a
public address, and the stubs count every connection, so "never connected" is observed, not
assumed. Time limits are checked by the result and message; elapsed time only has a generous upper
bound (the deadline + 5 s), proving the client gave up without measuring its speed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time

import pytest

from app.services import outbound
from app.services.outbound import Limits, OutboundError
from tests.support import new_key
from tests.support.stub_provider import BODY_MARKER, HEADER_MARKER, closed_port, make_test_ca

FAST = Limits(connect_timeout=1, read_timeout=0.5, deadline=2, max_response_bytes=4096)
PUBLIC_IP = "93.184.215.14"  # a public address; tests route it to a local stub, never to the internet
SYSTEM_TLS_CONTEXT = outbound.tls_context  # the real one, before any test replaces it
# Slack on top of a deadline for a busy machine: a bound proves the client gave up, not how fast.
GAVE_UP = 5


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def connections(monkeypatch):
    """Record every address the client connects to (and still connect)."""
    seen: list[tuple[str, int]] = []
    real = outbound.connect

    def recording(ip, port, timeout):
        seen.append((ip, port))
        return real(ip, port, timeout)

    monkeypatch.setattr(outbound, "connect", recording)
    return seen


def fetch(url: str, headers: dict | None = None, *, parse=None, allowlist: str = "127.0.0.1", limits: Limits = FAST):
    return outbound.get(url, headers or {}, parse=parse, allowlist=allowlist, limits=limits)


def failure(url: str, **kw) -> OutboundError:
    with pytest.raises(OutboundError) as caught:
        fetch(url, **kw)
    return caught.value


# --- answers -------------------------------------------------------------------------------------

def test_a_2xx_answer_is_parsed_and_the_headers_reach_the_provider(ctx, stubs):
    stub = stubs("ok")
    key = new_key()
    reply = fetch(stub.url + "/v1/models", {"Authorization": f"Bearer {key}"}, parse=json.loads)
    assert reply.status == 200
    assert [m["id"] for m in reply.value["data"]] == ["gpt-4o", "gpt-4o-mini", "o3-mini"]
    [hit] = stub.hits
    assert hit.path == "/v1/models"
    assert hit.headers["authorization"] == f"Bearer {key}"
    assert hit.headers["host"] == f"127.0.0.1:{stub.port}"


@pytest.mark.parametrize("mode", ["401", "403", "429", "500"])
def test_other_statuses_come_back_without_their_body(ctx, stubs, mode):
    stub = stubs(mode)
    reply = fetch(stub.url + "/models", parse=json.loads)
    assert reply.status == int(mode)
    assert reply.value is None


def test_a_redirect_is_never_followed(ctx, stubs):
    target = stubs("ok")
    stub = stubs("redirect", redirect_to=target.url)
    error = failure(stub.url + "/models", parse=json.loads)
    assert error.result == "unexpected_response"
    assert "redirect (HTTP 302)" in error.message
    assert len(stub.hits) == 1
    time.sleep(0.2)
    assert target.connections == 0


@pytest.mark.parametrize("mode", ["oversized", "oversized_stream"])
def test_a_body_over_the_cap_is_refused(ctx, stubs, mode):
    stub = stubs(mode, size=FAST.max_response_bytes)
    error = failure(stub.url + "/models", parse=json.loads)
    assert error.result == "unexpected_response"
    assert error.message == "The provider's answer was larger than 4,096 bytes."


def test_a_body_at_the_cap_is_read(ctx, stubs):
    stub = stubs("oversized", size=FAST.max_response_bytes - len(b'{"data": []}'))
    assert fetch(stub.url + "/models", parse=json.loads).value == {"data": []}


@pytest.mark.parametrize("mode", ["truncated", "malformed"])
def test_a_broken_body_is_an_unexpected_response(ctx, stubs, mode):
    stub = stubs(mode)
    error = failure(stub.url + "/models", parse=json.loads)
    assert error.result == "unexpected_response"
    assert BODY_MARKER not in error.message


def test_a_parser_that_recurses_too_deep_is_an_unexpected_response(ctx, stubs):
    stub = stubs("ok")

    def parse(_body):
        raise RecursionError

    assert failure(stub.url + "/models", parse=parse).result == "unexpected_response"


# --- time limits -------------------------------------------------------------------------------

def test_a_provider_slower_than_the_read_timeout_times_out(ctx, stubs):
    stub = stubs("slow", delay=60)  # would answer long after any bound below
    started = time.monotonic()
    error = failure(stub.url + "/models", parse=json.loads)
    assert error.result == "timeout"
    assert time.monotonic() - started < FAST.deadline + GAVE_UP  # it gave up rather than wait
    assert error.message == "The provider did not answer within 0.5 seconds."


def test_a_provider_that_drips_bytes_is_cut_off_at_the_deadline(ctx, stubs):
    """Each byte comes well within the read timeout; only the overall deadline stops it."""
    stub = stubs("drip")
    limits = Limits(connect_timeout=1, read_timeout=0.5, deadline=1, max_response_bytes=4096)
    started = time.monotonic()
    error = failure(stub.url + "/models", parse=json.loads, limits=limits)
    assert error.result == "timeout"
    assert time.monotonic() - started < limits.deadline + GAVE_UP  # the whole drip takes 13 s
    assert error.message == "The provider did not finish answering within 1 second."


def test_a_resolver_that_hangs_is_bounded_by_the_deadline(ctx, monkeypatch, connections):
    released = threading.Event()
    # Hangs until the test is over, long after any bound below.
    monkeypatch.setattr(outbound, "resolve", lambda host, port: released.wait(60) and [PUBLIC_IP])
    limits = Limits(connect_timeout=1, read_timeout=1, deadline=0.4, max_response_bytes=4096)
    started = time.monotonic()
    try:
        error = failure("http://slow-dns.example.com/v1/models", limits=limits)
    finally:
        released.set()
    assert error.result == "timeout"
    assert time.monotonic() - started < limits.deadline + GAVE_UP  # it gave up rather than wait
    assert connections == []


def test_a_connect_timeout_is_a_timeout(ctx, monkeypatch):
    def never_connects(ip, port, timeout):
        raise TimeoutError

    monkeypatch.setattr(outbound, "connect", never_connects)
    error = failure("http://127.0.0.1:9/models")
    assert error.result == "timeout"
    assert error.message == "127.0.0.1 did not accept a connection within 1 second."


# --- where it may connect ------------------------------------------------------------------------

def test_loopback_is_refused_unless_allow_listed_and_never_connected(ctx, stubs):
    stub = stubs("ok")
    error = failure(stub.url + "/models", allowlist="")
    assert error.result == "unreachable"
    assert "PRIVATE_BASE_URL_ALLOWLIST" in error.message
    assert stub.connections == 0


def test_an_allow_listed_host_name_may_resolve_to_loopback(ctx, stubs):
    stub = stubs("ok")
    reply = fetch(f"http://localhost:{stub.port}/models", allowlist="localhost")
    assert reply.status == 200
    assert stub.hits[0].headers["host"] == f"localhost:{stub.port}"


def test_localhost_is_refused_without_the_allowlist(ctx, stubs, connections):
    stub = stubs("ok")
    assert failure(f"http://localhost:{stub.port}/models", allowlist="").result == "unreachable"
    assert connections == []
    assert stub.connections == 0


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/",
    "http://2852039166/latest/",  # 169.254.169.254 as one decimal number
    "http://metadata.google.internal/computeMetadata/v1/",
])
def test_metadata_addresses_never_get_a_connection_attempt(ctx, monkeypatch, connections, url):
    resolved: list[str] = []
    monkeypatch.setattr(outbound, "resolve", lambda host, port: resolved.append(host) or [PUBLIC_IP])
    error = failure(url, allowlist="169.254.169.254,fd00:ec2::254,metadata.google.internal,0.0.0.0/0")
    assert error.result == "unreachable"
    assert connections == []
    assert resolved == []


def test_a_name_that_resolves_to_a_metadata_address_is_refused_even_when_allow_listed(ctx, monkeypatch, connections):
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["169.254.169.254"])
    error = failure("http://models.internal-proxy.example/v1", allowlist="models.internal-proxy.example")
    assert error.result == "unreachable"
    assert connections == []


def test_a_name_with_one_private_address_among_public_ones_is_refused(ctx, monkeypatch, connections):
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [PUBLIC_IP, "10.0.0.7"])
    assert failure("http://mixed.example.com/v1", allowlist="").result == "unreachable"
    assert connections == []


def test_dns_rebinding_cannot_switch_the_checked_address(ctx, stubs, monkeypatch):
    """The name resolves to a public address first and to loopback on any later lookup. The
    client must look it up once and connect to the public address it checked: here that address
    is routed to a "public" stub, and the loopback server must see no connection at all."""
    loopback_target = stubs("ok")
    public_stand_in = stubs("ok", models=("public-model",))
    lookups: list[str] = []

    def rebinding_getaddrinfo(host, port, *args, **kwargs):
        lookups.append(host)
        ip = PUBLIC_IP if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    connected: list[str] = []
    real_connect = outbound.connect

    def route_public_to_stand_in(ip, port, timeout):
        connected.append(ip)
        if ip == PUBLIC_IP:
            return real_connect("127.0.0.1", public_stand_in.port, timeout)
        return real_connect(ip, port, timeout)

    monkeypatch.setattr(outbound, "connect", route_public_to_stand_in)
    url = f"http://rebind.example.com:{loopback_target.port}/v1/models"
    reply = fetch(url, parse=json.loads, allowlist="")
    assert [m["id"] for m in reply.value["data"]] == ["public-model"]
    assert lookups == ["rebind.example.com"]
    assert connected == [PUBLIC_IP]
    assert public_stand_in.hits[0].headers["host"] == f"rebind.example.com:{loopback_target.port}"
    time.sleep(0.2)
    assert loopback_target.connections == 0


def test_a_dns_failure_is_unreachable(ctx, monkeypatch):
    def fails(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(outbound, "resolve", fails)
    error = failure("http://no-such-host.example.com/v1")
    assert error.result == "unreachable"
    assert error.message == "Could not find the host no-such-host.example.com (DNS lookup failed)."


def test_a_refused_connection_is_unreachable(ctx):
    port = closed_port()
    error = failure(f"http://127.0.0.1:{port}/v1/models")
    assert error.result == "unreachable"
    assert error.message == f"Could not connect to 127.0.0.1 on port {port}."


def test_proxy_variables_are_ignored(ctx, stubs, monkeypatch):
    proxy = stubs("ok")
    stub = stubs("ok")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch(stub.url + "/models").status == 200
    assert len(stub.hits) == 1
    assert proxy.connections == 0


def test_header_values_that_could_split_the_request_are_refused_before_connecting(ctx, stubs):
    stub = stubs("ok")
    with pytest.raises(ValueError):
        fetch(stub.url + "/models", {"Authorization": "Bearer abc\r\nX-Injected: 1"})
    assert stub.connections == 0


# --- TLS ---------------------------------------------------------------------------------------

@pytest.fixture
def tls_stub(tmp_path, stubs, monkeypatch):
    """An https stub for provider.test (certificate from a test CA), reached through a resolver
    that answers 127.0.0.1 and a client that trusts the test CA."""
    ca = make_test_ca(tmp_path, "provider.test")
    stub = stubs("ok", tls=ca.server_context())
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["127.0.0.1"])
    monkeypatch.setattr(outbound, "tls_context", ca.client_context)
    return stub


def test_https_verifies_the_original_host_name_over_the_pinned_address(ctx, tls_stub):
    reply = fetch(f"https://provider.test:{tls_stub.port}/v1/models", parse=json.loads, allowlist="provider.test")
    assert reply.status == 200
    assert tls_stub.server_names == ["provider.test"]
    assert tls_stub.hits[0].headers["host"] == f"provider.test:{tls_stub.port}"


def test_https_refuses_a_certificate_for_another_name(ctx, tls_stub):
    error = failure(f"https://other.test:{tls_stub.port}/v1/models", allowlist="other.test")
    assert error.result == "unreachable"
    assert error.message == "The TLS certificate of other.test could not be verified."
    assert tls_stub.hits == []


def test_https_refuses_a_certificate_the_system_does_not_trust(ctx, tls_stub, monkeypatch):
    monkeypatch.setattr(outbound, "tls_context", SYSTEM_TLS_CONTEXT)
    error = failure(f"https://provider.test:{tls_stub.port}/v1/models", allowlist="provider.test")
    assert error.result == "unreachable"
    assert tls_stub.hits == []


# --- settings and logs -------------------------------------------------------------------------

def test_limits_come_from_the_config_only(ctx, monkeypatch):
    """app/config.py reads the environment and validates the limits at start-up; at call time only
    the app's config counts."""
    monkeypatch.setenv("OUTBOUND_READ_TIMEOUT", "0.25")
    ctx.config["OUTBOUND_CONNECT_TIMEOUT"] = 2
    limits = Limits.from_config()
    assert (limits.connect_timeout, limits.read_timeout, limits.deadline, limits.max_response_bytes) == \
        (2, 10, 15, 1024 * 1024)


def test_nothing_the_provider_sends_and_no_key_is_logged(ctx, stubs, caplog):
    caplog.set_level(logging.DEBUG)
    key = new_key()
    for mode in ("ok", "401", "malformed", "redirect"):
        stub = stubs(mode, redirect_to="http://127.0.0.1:9")
        with contextlib.suppress(OutboundError):
            fetch(stub.url + "/models", {"Authorization": f"Bearer {key}"}, parse=json.loads)
    assert "outbound GET http://127.0.0.1:" in caplog.text  # the log was captured
    for secret in (key, BODY_MARKER, HEADER_MARKER):
        assert secret not in caplog.text
