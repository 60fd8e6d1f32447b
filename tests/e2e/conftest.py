"""Browser tests: the real app under gunicorn on its own PostgreSQL database, driven by Chromium.

- `server` (package: gone once the browser tests are done): creates `<TEST_DATABASE_URL database>_e2e`, applies the migrations with
  `flask --app wsgi db upgrade` and serves `wsgi:app` with gunicorn on a free port, configured as
  in production (SWITCHBOARD_ENV=production) except for plain-HTTP cookies.
- `sso_server` (package, started only by the tests that use it): a second gunicorn on the same
  database with single sign-on at the run's OpenID provider process (`oidc_provider`); its tabs
  come from `sso_web`.
- `browser` (package): Debian's Chromium (/usr/bin/chromium) through Playwright.
- Every test starts from an empty database (the server keeps running) and gets `web`, which
  opens watched tabs: each console error, uncaught page error and Content-Security-Policy
  violation is recorded, every response body and every DOM the test looked at is kept, and the
  test fails at teardown if any of them occurred, or if a canary key (tests.support.new_key)
  appears in a response, a page or the server's log.

These tests run in the PostgreSQL half of `make test` only (marked `postgres_only` and `browser`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import CANARIES, KEY_A, PROJECT_ROOT, SECRET_KEY, database_url, is_postgres

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
E2E_DIR = Path(__file__).resolve().parent
AXE_JS = E2E_DIR / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(PROJECT_ROOT) / "test-artifacts"
# Settings the server must not inherit from the test run or the developer's shell (or `.env`:
# python-dotenv never overrides a variable that is set, so each of these is set explicitly).
_APP_VARIABLES = ("DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEYS", "REDIS_URL", "ALLOW_BYOK", "SWITCHBOARD_ENV",
                  "SWITCHBOARD_INSTANCE_PATH", "SESSION_COOKIE_SECURE", "PRIVATE_BASE_URL_ALLOWLIST", "FLASK_APP",
                  "FLASK_DEBUG", "TEST_DATABASE_URL")
_SSO_VARIABLES = ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_SCOPES", "OIDC_GROUPS_CLAIM",
                  "OIDC_ADMIN_GROUP", "OIDC_ALLOWED_EMAIL_DOMAINS", "PASSWORD_LOGIN")


def e2e_database_url() -> str:
    """The test database's URL with `_e2e` appended to the database name."""
    base, _, query = database_url().partition("?")
    return base + "_e2e" + (f"?{query}" if query else "")


def _admin_conninfo(url: str) -> tuple[str, str]:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1).split("?", 1)[0]
    root, dbname = conninfo.rsplit("/", 1)
    return root + "/postgres", dbname


def recreate_database(url: str) -> None:
    """An empty database for the run: created if missing, its schema dropped otherwise."""
    import psycopg
    from psycopg import sql

    admin, dbname = _admin_conninfo(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def empty_tables(url: str) -> None:
    """Delete every row except the schema version and the registered encryption keys (the running
    server remembers which key digests it registered at startup). DELETE, children first: on the
    busy shared server TRUNCATE costs far more than deleting a few rows."""
    import psycopg

    import app.models  # noqa: F401 (registers every table on the metadata)
    from app.extensions import db

    tables = [t.name for t in reversed(db.metadata.sorted_tables) if t.name != "encryption_keys"]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        for table in tables:
            conn.execute(f'DELETE FROM "{table}"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    database_url: str
    log_path: Path
    env: dict

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="package")
def server():
    if not is_postgres():
        pytest.skip("browser tests run in the PostgreSQL half of the suite")
    url = e2e_database_url()
    recreate_database(url)
    with _gunicorn(url) as running:
        yield running


@pytest.fixture(scope="package")
def sso_server(server, oidc_provider):
    """A second server on the same database, with single sign-on at the run's OpenID provider
    (tests/support/oidc.py) and the password form still on."""
    with _gunicorn(server.database_url, migrate=False, OIDC_ISSUER=oidc_provider.url,
                   OIDC_CLIENT_ID="switchboard", OIDC_CLIENT_SECRET="e2e-client-secret",
                   OIDC_GROUPS_CLAIM="groups", OIDC_ADMIN_GROUP="switchboard-admins") as running:
        yield running


@contextlib.contextmanager
def _gunicorn(url: str, migrate: bool = True, **settings: str):
    """gunicorn serving wsgi:app on a free port, configured as in production (plain-HTTP cookies
    aside), with `settings` added to its environment."""
    instance = Path(tempfile.mkdtemp(prefix="switchboard-e2e-"))
    env = {k: v for k, v in os.environ.items() if k not in _APP_VARIABLES}
    env.update({
        "DATABASE_URL": url, "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A, "SWITCHBOARD_ENV": "production",
        "SESSION_COOKIE_SECURE": "false", "SWITCHBOARD_INSTANCE_PATH": str(instance), "REDIS_URL": "",
        # Loopback is allowed so that provider calls can reach tests/support/stub_provider.py.
        "ALLOW_BYOK": "true", "PRIVATE_BASE_URL_ALLOWLIST": "127.0.0.1", "PYTHONPATH": PROJECT_ROOT,
        # No single sign-on unless asked for (a developer's .env must not switch it on).
        **{name: "" for name in _SSO_VARIABLES}, **settings,
    })
    if migrate:
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT,
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    port = _free_port()
    log_path = instance / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--threads", "4", "--graceful-timeout", "2", "--log-level", "warning"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = Server(f"http://127.0.0.1:{port}", url, log_path, env)
    try:
        _wait_until_ready(running, process)
        yield running
    finally:
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_ready(running: Server, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{running.log()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(running.url + "/healthz", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer /healthz within 30 s:\n{running.log()[-3000:]}")


@pytest.fixture(scope="package")
def browser():
    if not is_postgres():
        pytest.skip("browser tests run in the PostgreSQL half of the suite")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make e2e-deps` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def axe_source() -> str:
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} is missing: `make e2e-deps` runs `npm ci` in tests/e2e")
    return AXE_JS.read_text()


# --- watched tabs -------------------------------------------------------------------------------

_FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
_CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.__e2eCspViolation({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample,
                            url: document.location.href});
});
"""


class Findings:
    """What a person would notice went wrong, collected across every tab of one test."""

    def __init__(self):
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.csp_violations: list[dict] = []
        self.documents: list[tuple[str, str]] = []  # (url, text) of every response body and DOM seen
        self.expected_statuses: set[tuple[str, int]] = set()  # (url, status) a test asked for

    def console_error(self, url: str, text: str) -> None:
        self.console_errors.append((url, text))

    def unexpected_console_errors(self) -> list[str]:
        """Chromium logs every 4xx/5xx document as a console error; one the test expected is not."""
        unexpected = []
        for url, text in self.console_errors:
            status = _FAILED_LOAD.match(text)
            if not (status and (url, int(status.group(1))) in self.expected_statuses):
                unexpected.append(f"{url}: {text}")
        return unexpected

    def leaks(self) -> list[str]:
        found = []
        for url, text in self.documents:
            found += [f"{url} contains canary {key[:18]}…" for key in CANARIES if key in text]
        return found


class Web:
    """Opens tabs (one browser context each, so each tab is its own signed-in person)."""

    def __init__(self, browser, server: Server, findings: Findings):
        self.browser, self.server, self.findings = browser, server, findings
        self.contexts = []
        self.tabs = []

    def tab(self, *, viewport: dict | None = None, bypass_csp: bool = False, javascript: bool = True):
        from tests.e2e.pages import Tab

        context = self.browser.new_context(base_url=self.server.url, viewport=viewport or {"width": 1280, "height": 800},
                                           bypass_csp=bypass_csp, java_script_enabled=javascript)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        context.expose_binding("__e2eCspViolation", lambda _source, v: self.findings.csp_violations.append(v))
        context.add_init_script(_CSP_LISTENER)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and self.findings.console_error(m.location.get("url", ""), m.text))
        page.on("pageerror", lambda e: self.findings.page_errors.append(f"{page.url}: {e}"))
        tab = Tab(page, self.findings)
        self.tabs.append(tab)
        return tab

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def findings() -> Findings:
    return Findings()


@pytest.fixture
def web(browser, server, findings):
    """Watched tabs on an empty database; fails the test on any console error, page error, CSP
    violation or key that reached a page, a response or the server log."""
    with watched(browser, server, findings) as opened:
        yield opened


@pytest.fixture
def sso_web(browser, sso_server, findings):
    """`web`, on the server with single sign-on."""
    with watched(browser, sso_server, findings) as opened:
        yield opened


@contextlib.contextmanager
def watched(browser, server: Server, findings: Findings):
    empty_tables(server.database_url)
    log_start = server.log_path.stat().st_size
    opened = Web(browser, server, findings)
    yield opened
    for tab in opened.tabs:
        tab.settle()
    opened.close()
    log = server.log()[log_start:]
    problems = [*(f"console error: {e}" for e in findings.unexpected_console_errors()),
                *(f"page error: {e}" for e in findings.page_errors),
                *(f"CSP violation: {v}" for v in findings.csp_violations),
                *findings.leaks(),
                *(f"server log contains canary {k[:18]}…" for k in CANARIES if k in log)]
    if re.search(r"Traceback|Internal error", log):
        problems.append(f"server logged an error:\n{log[-2000:]}")
    assert not problems, "\n".join(problems)
