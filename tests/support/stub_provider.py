"""A stub AI provider for tests: a threading HTTP(S) server on 127.0.0.1 that answers like a
provider would, and records what reached it (connections, paths, the credential headers).

Modes: `ok` (a model list in the shape the path asks for), `400`, `401`, `403`, `429`, `500`, `slow`
(sleeps `delay` seconds before answering), `drip` (sends the headers one byte at a time),
`redirect` (302 to `redirect_to`), `oversized` (a body one byte over `size` with a
Content-Length), `oversized_stream` (the same, without Content-Length), `truncated` (promises
more bytes than it sends), `malformed` (200, not JSON), `array` (200, a JSON array).

Every body and one header carry `BODY_MARKER` / `HEADER_MARKER`, so a test can prove that nothing
the provider sent is passed on.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BODY_MARKER = "stub-body-marker-7f3a"
HEADER_MARKER = "stub-header-marker-91c2"
MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini")
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key", "anthropic-version", "host",
                      "user-agent")


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StubProvider:
    mode: str = "ok"
    models: tuple[str, ...] = MODELS
    delay: float = 2.0
    redirect_to: str = ""
    size: int = 1024 * 1024
    tls: ssl.SSLContext | None = None
    on_request: Callable[[], None] | None = None  # runs in the server thread before each answer
    hits: list[Hit] = field(default_factory=list)
    connections: int = 0
    server_names: list[str | None] = field(default_factory=list)

    def start(self) -> StubProvider:
        stub = self
        self._stopping = threading.Event()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                stub.connections += 1
                return True

            def handle_error(self, request, client_address) -> None:
                pass  # clients that hang up on purpose (timeouts, size caps) are not errors here

        self._server = Server(("127.0.0.1", 0), _handler(self))
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def body_for(self, path: str) -> dict | list:
        if "/v1beta/models" in path:
            models = [{"name": f"models/{m}", "supportedGenerationMethods": ["generateContent"]} for m in self.models]
            models.append({"name": "models/text-embedding-004", "supportedGenerationMethods": ["embedContent"]})
            return {"models": models, "note": BODY_MARKER}
        if path.split("?")[0].endswith("/key"):
            return {"data": {"label": BODY_MARKER, "usage": 0}}
        if path.split("?")[0].endswith("/credits"):
            return {"balance": "12.00", "note": BODY_MARKER}
        return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": BODY_MARKER} for m in self.models]}


def _handler(stub: StubProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format, *args) -> None:
            pass

        def do_GET(self) -> None:
            stub.hits.append(Hit("GET", self.path, {k.lower(): v for k, v in self.headers.items()
                                                    if k.lower() in CREDENTIAL_HEADERS}))
            mode = stub.mode
            if stub.on_request is not None:
                stub.on_request()
            if mode in ("400", "401", "403", "429", "500"):
                return self._send(int(mode), {"error": {"message": f"Incorrect API key {BODY_MARKER}"}})
            if mode == "slow":
                stub._stopping.wait(stub.delay)
                return self._send(200, stub.body_for(self.path))
            if mode == "drip":
                for byte in b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 200:
                    if stub._stopping.wait(0.05):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                return
            if mode == "redirect":
                self.send_response(302)
                self.send_header("Location", stub.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if mode in ("oversized", "oversized_stream"):
                body = b'{"data": [' + b" " * stub.size + b"]}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if mode == "oversized":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if mode == "truncated":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b'{"data": [')
                return
            if mode == "malformed":
                return self._send(200, None, raw=f"<html>not json {BODY_MARKER}</html>".encode())
            if mode == "array":
                return self._send(200, [BODY_MARKER])
            return self._send(200, stub.body_for(self.path))

        def _send(self, status: int, payload, raw: bytes | None = None) -> None:
            body = raw if raw is not None else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Stub", HEADER_MARKER)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up first

    return Handler


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TestCA:
    """A throwaway certificate authority and a server certificate it signed."""

    __test__ = False  # not a pytest class

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def make_test_ca(directory: Path, hostname: str) -> TestCA:
    """A CA and a certificate for `hostname` (a DNS name), written as PEM files in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchboard test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = TestCA(directory / "ca.pem", directory / f"{hostname}.pem", directory / f"{hostname}.key")
    paths.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return paths


def wait_for(predicate, timeout: float = 2.0) -> bool:
    """Poll `predicate` until true or `timeout` passes (for counters a server thread updates)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
