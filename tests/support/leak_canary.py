"""Leak canary: a pytest plugin that watches everything the test suite sees for a stored API key.

Every provider key the tests make comes from `tests.support.new_key()`, which records it in
`tests.support.CANARIES`. For the whole session this plugin scans

- every response the Flask test client returns (status line aside: headers and body, redirect
  hops included), and every `http.client` response read in this process (live-server and
  browser-suite helpers, and the app's own outbound calls to stub providers);
- every log record of every logger, formatted (message, traceback, stack and `extra=` fields),
  through a handler on the root logger with the root level at DEBUG;
- the test database after each test, just before `tests/conftest.py` empties it: every row of
  every table that has rows, every column, as text, bytes columns both raw and as hex.

In each text it looks for every canary known at that moment:

- any 12-character slice of it (so the full key, and any part long enough to matter) that holds
  at least 8 characters of its random part. Slices made mostly of the readable `sk-canary-<label>-`
  are left to the prefix check below: a label such as `provider` or `central-openai-compat` is
  ordinary page text (tests name providers `canary-provider`), not a secret;
- the same in base64 (standard and URL-safe, padded or not, at all three byte alignments): every
  run of base64 characters is decoded at its four character alignments and the bytes are
  scanned again, which also finds a key inside a longer encoded value; a decoded zlib stream
  (Flask's compressed session cookie, flashed messages included) is inflated and scanned;
- the same in hex (runs of hex digits decoded at both alignments);
- the prefix `sk-canary-` itself, plain or encoded, which also catches keys that a test built
  without `new_key()`.

The 4-character hint (`...` and the last 4 characters) is far shorter than a slice, so it is
allowed. Places that legitimately hold a key are not recorded: request bodies the tests send,
the stub provider servers that receive keys, and the `api_key` field of the JSON answer to
`POST .../credentials`, where the SPEC hands the key to a service token (that one field only; the
rest of that answer and its headers are scanned).

The terminal summary says what was scanned and how many occurrences were found. Any occurrence
fails the session (exit status 1), naming the test and where (a response's method and path, a
logger, a table and column) and the canary's number, never the canary itself.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import re
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient

from tests import support

PREFIX = "sk-canary-"
SLICE = 12
RANDOM_PART = 40  # tests.support.canary(): 40 random hex characters after the label
MIN_RANDOM_IN_SLICE = 8
CREDENTIALS_SUFFIX = "/credentials"
MAX_FINDINGS_KEPT = 200
MAX_INFLATED = 4 * 1024 * 1024

_RUN = re.compile(rf"[a-z0-9-]{{{SLICE},}}")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}")
_HEX_RUN = re.compile(rf"[0-9a-fA-F]{{{2 * SLICE},}}")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_LOG_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@dataclass(frozen=True)
class Finding:
    test: str
    where: str
    how: str
    canary: str  # "#<n> (made in <test>)" or "unregistered": never the key itself


class Scanner:
    """Looks for canaries in text; keeps counts and findings, never the scanned text."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.slices: dict[str, int] = {}
        self.known = 0
        self.made_in: list[str] = []
        self.test = "<session start>"
        self.stats: Counter[str] = Counter()
        self.findings: list[Finding] = []
        self.problems: list[str] = []
        self.occurrences = 0
        self.seconds = 0.0

    # --- canaries ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Take in the canaries made since the last scan (a key cannot appear before it exists)."""
        canaries = support.CANARIES
        if self.known == len(canaries):
            return
        with self.lock:
            while self.known < len(canaries):
                key = canaries[self.known]
                random_from = len(key) - RANDOM_PART
                for start in range(len(key) - SLICE + 1):
                    if start + SLICE - max(start, random_from) >= MIN_RANDOM_IN_SLICE:
                        self.slices.setdefault(key[start:start + SLICE], self.known)
                self.made_in.append(self.test)
                self.known += 1

    def _name(self, index: int | None) -> str:
        if index is None:
            return "unregistered (the sk-canary- prefix)"
        return f"#{index + 1} (made in {self.made_in[index]})"

    # --- scanning ------------------------------------------------------------------------------

    def count(self, kind: str, size: int) -> None:
        with self.lock:
            self.stats[kind] += 1
            self.stats[f"{kind} bytes"] += size

    def problem(self, message: str) -> None:
        """Something could not be scanned: the session fails, as for a finding."""
        with self.lock:
            self.stats["problems"] += 1
            if len(self.problems) < MAX_FINDINGS_KEPT:
                self.problems.append(f"{self.test}: {message}")

    def scan(self, text: str, where: str, how: str = "plain") -> int:
        """Count canary occurrences in `text` and in the base64 runs inside it; record findings."""
        self.refresh()
        hits = self._plain(text, where, how)
        for match in _B64_RUN.finditer(text):
            run = match.group()
            for align in range(4):
                chunk = run[align:]
                chunk = chunk[: len(chunk) // 4 * 4]
                if len(chunk) < 16:
                    break
                try:
                    decoded = base64.b64decode(chunk.translate(_URLSAFE_TO_STANDARD), validate=True)
                except (binascii.Error, ValueError):
                    continue
                hits += self._plain(decoded.decode("latin-1"), where, f"{how}, base64")
                if decoded[:1] == b"x":  # a zlib stream (e.g. a compressed session cookie)
                    hits += self._inflated(decoded, where, how)
        for match in _HEX_RUN.finditer(text):
            run = match.group()
            for align in range(2):
                chunk = run[align:]
                decoded = bytes.fromhex(chunk[: len(chunk) // 2 * 2])
                hits += self._plain(decoded.decode("latin-1"), where, f"{how}, hex")
        return hits

    def _inflated(self, data: bytes, where: str, how: str) -> int:
        try:
            inflated = zlib.decompressobj().decompress(data, MAX_INFLATED)
        except zlib.error:
            return 0
        return self.scan(inflated.decode("latin-1"), where, f"{how}, base64+zlib")

    def _plain(self, text: str, where: str, how: str) -> int:
        hits = 0
        if PREFIX in text:
            found = text.count(PREFIX)
            hits += found
            self._found(where, how, None, found)
        slices = self.slices
        for match in _RUN.finditer(text):
            run = match.group()
            by_canary: Counter[int] = Counter()
            for i in range(len(run) - SLICE + 1):
                index = slices.get(run[i:i + SLICE])
                if index is not None:
                    by_canary[index] += 1
            for index, found in by_canary.items():
                hits += found
                self._found(where, how, index, found)
        return hits

    def _found(self, where: str, how: str, index: int | None, found: int) -> None:
        with self.lock:
            self.occurrences += found
            if len(self.findings) < MAX_FINDINGS_KEPT:
                self.findings.append(Finding(self.test, where, how, self._name(index)))

    @property
    def failed(self) -> bool:
        return bool(self.occurrences or self.stats["problems"])


SCANNER = Scanner()


# --- Flask test client ---------------------------------------------------------------------------


def scan_response(response) -> None:
    """Headers and body of a test-client response; the `api_key` of a credentials hand-out is left out."""
    if getattr(response, "_leak_canary_scanned", False):
        return
    response._leak_canary_scanned = True
    started = time.perf_counter()
    request = getattr(response, "request", None)
    method = getattr(request, "method", "?")
    path = getattr(request, "path", "?")
    where = f"response to {method} {path} ({response.status_code})"
    body = response.get_data()
    if method == "POST" and path.endswith(CREDENTIALS_SUFFIX) and response.is_json:
        data = response.get_json(silent=True)
        if isinstance(data, dict) and "api_key" in data:
            body = json.dumps({k: v for k, v in data.items() if k != "api_key"}).encode()
    headers = str(response.headers)
    SCANNER.count("test client response", len(headers) + len(body))
    SCANNER.scan(headers, where + " headers", "header")
    SCANNER.scan(body.decode("latin-1"), where, "body")
    SCANNER.seconds += time.perf_counter() - started


_original_open = FlaskClient.open


def _open(self, *args, **kwargs):
    response = _original_open(self, *args, **kwargs)
    try:
        for hop in (*getattr(response, "history", ()), response):
            scan_response(hop)
    except Exception as error:  # the scan must never change what a test sees
        SCANNER.problem(f"a test client response could not be scanned: {type(error).__name__}")
    return response


# --- http.client (live servers, stub providers) ----------------------------------------------------

_original_begin = http.client.HTTPResponse.begin
_original_read = http.client.HTTPResponse.read


def _begin(self):
    _original_begin(self)
    try:
        self._leak_canary_tail = ""
        headers = str(self.msg)
        SCANNER.count("http.client response", len(headers))
        SCANNER.scan(headers, f"http.client response ({self.status}) headers", "header")
    except Exception as error:
        SCANNER.problem(f"an http.client response could not be scanned: {type(error).__name__}")


def _read(self, amt=None):
    data = _original_read(self, amt)
    try:
        if data:
            # Keep the end of the previous chunk, so a key split between two reads is still whole.
            tail = getattr(self, "_leak_canary_tail", "")
            text = tail + data.decode("latin-1")
            self._leak_canary_tail = text[-256:]
            with SCANNER.lock:
                SCANNER.stats["http.client response bytes"] += len(data)
            SCANNER.scan(text, f"http.client response ({self.status}) body", "body")
    except Exception as error:
        SCANNER.problem(f"an http.client body could not be scanned: {type(error).__name__}")
    return data


# --- logging -------------------------------------------------------------------------------------


class CanaryLogHandler(logging.Handler):
    """Every record that reaches the root logger, formatted with its extra fields. Filters added
    to this handler (the app adds its redacting filter to the root handlers it finds) are
    bypassed: what is scanned is what a handler without any filter would write."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def handle(self, record: logging.LogRecord) -> bool:
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        started = time.perf_counter()
        try:
            try:
                text = self.format(record)
            except Exception:
                text = repr(vars(record))
            extras = {k: v for k, v in vars(record).items() if k not in _LOG_ATTRS}
            if extras:
                text += " " + repr(extras)
            SCANNER.count("log record", len(text))
            SCANNER.scan(text, f"log {record.name} {record.levelname}", "log")
        except Exception as error:
            SCANNER.problem(f"a log record could not be scanned: {type(error).__name__}")
        SCANNER.seconds += time.perf_counter() - started


HANDLER = CanaryLogHandler()


# --- the test database -----------------------------------------------------------------------------

_tables: list[str] | None = None


def scan_database(app, test: str) -> None:
    """Scan every row of the test database. Called by conftest's `_isolate` before it empties
    the tables; reads only the tables that have rows, and keeps nothing."""
    global _tables
    import sqlalchemy as sa

    from app.extensions import db

    started = time.perf_counter()
    try:
        with app.app_context():
            db.session.remove()
            with db.engine.connect() as conn:
                if _tables is None:
                    _tables = sorted(sa.inspect(conn).get_table_names())
                probe = " UNION ALL ".join(f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in _tables)
                for (table,) in conn.exec_driver_sql(probe).all():
                    result = conn.exec_driver_sql(f'SELECT * FROM "{table}"')
                    columns = list(result.keys())
                    for row in result:
                        _scan_row(table, columns, row)
                conn.rollback()
        SCANNER.stats["database dumps"] += 1
    except Exception as error:  # a test that broke the database: say so rather than skip it
        SCANNER.problem(f"the database could not be dumped: {type(error).__name__}: {str(error)[:200]}")
    SCANNER.seconds += time.perf_counter() - started


def _scan_row(table: str, columns: list[str], row) -> None:
    texts, size = [], 0
    for column, value in zip(columns, row, strict=True):
        if value is None:
            continue
        if isinstance(value, memoryview):
            value = value.tobytes()
        if isinstance(value, bytes):
            size += len(value)
            where = f"database {table}.{column}"
            SCANNER.scan(value.decode("latin-1"), where, "bytes")
            SCANNER.scan(value.hex(), where, "bytes as hex")
            continue
        text = value if isinstance(value, str) else str(value)
        size += len(text)
        texts.append(text)
    SCANNER.count("database row", size)
    SCANNER.scan("\x00".join(texts), f"database {table} row", "text")


# --- pytest hooks ----------------------------------------------------------------------------------


def pytest_configure(config) -> None:
    FlaskClient.open = _open
    http.client.HTTPResponse.begin = _begin
    http.client.HTTPResponse.read = _read
    root = logging.getLogger()
    root.addHandler(HANDLER)
    config._leak_canary_root_level = root.level
    root.setLevel(logging.DEBUG)


def pytest_unconfigure(config) -> None:
    FlaskClient.open = _original_open
    http.client.HTTPResponse.begin = _original_begin
    http.client.HTTPResponse.read = _original_read
    root = logging.getLogger()
    root.removeHandler(HANDLER)
    root.setLevel(getattr(config, "_leak_canary_root_level", logging.WARNING))


def pytest_runtest_logstart(nodeid, location) -> None:
    SCANNER.test = nodeid


def pytest_sessionfinish(session, exitstatus) -> None:
    SCANNER.test = "<session end>"
    SCANNER.refresh()
    if SCANNER.failed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    s, write = SCANNER.stats, terminalreporter.write_line
    terminalreporter.section("leak canary")
    write(f"canaries: {SCANNER.known} keys ({len(SCANNER.slices):,} slices of {SLICE} characters)")
    write(f"test client responses: {s['test client response']:,} ({s['test client response bytes']:,} bytes, "
          "headers included)")
    write(f"http.client responses: {s['http.client response']:,} ({s['http.client response bytes']:,} bytes)")
    write(f"log records: {s['log record']:,} ({s['log record bytes']:,} bytes)")
    write(f"database: {s['database dumps']:,} dumps after tests, {s['database row']:,} rows "
          f"({s['database row bytes']:,} bytes)")
    write(f"time spent recording and scanning: {SCANNER.seconds:.1f} s")
    write(f"occurrences found: {SCANNER.occurrences}", red=bool(SCANNER.occurrences), green=not SCANNER.occurrences)
    for finding in SCANNER.findings:
        write(f"  {finding.test}: {finding.where} [{finding.how}] canary {finding.canary}", red=True)
    for problem in SCANNER.problems:
        write(f"  not scanned: {problem}", red=True)
    if SCANNER.failed:
        write("LEAK CANARY FAILED: the session fails (exit status 1).", red=True, bold=True)
