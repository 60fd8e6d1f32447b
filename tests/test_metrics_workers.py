"""Metrics under gunicorn with two workers (SPEC section 11): prometheus-client's multiprocess mode.

The real server, as the production recipe runs it: `gunicorn -c deploy/gunicorn.conf.py` with
`PROMETHEUS_MULTIPROC_DIR`, on its own PostgreSQL database (`<test database>_metrics`) reached
through a TCP proxy the test can close. Every metric is driven by the action it counts over HTTP;
each scrape, whichever worker answers it, shows the sums of both workers, and a worker that is
stopped and replaced takes none of its counts with it. PostgreSQL half only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.support import (
    _APP_VARIABLES,
    API,
    KEY_A,
    PASSWORD,
    PROJECT_ROOT,
    SECRET_KEY,
    database_url,
    is_postgres,
    make_token,
    make_user,
)
from tests.support.stub_provider import StubProvider
from tests.test_faults import TcpProxy, free_port

pytestmark = pytest.mark.postgres_only

TOKEN = "metrics-" + uuid.uuid4().hex
PROVIDER_RULE = f"{API}/ai-providers/<provider_id>"


def metrics_database_url() -> str:
    base, _, query = database_url().partition("?")
    return base + "_metrics" + (f"?{query}" if query else "")


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1).split("?", 1)[0]
    root, dbname = conninfo.rsplit("/", 1)
    with psycopg.connect(root + "/postgres", autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


class Server:
    """HTTP calls to the served app, each on a new connection (so either worker may take it)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, *, body=None, token: str | None = None, headers=None,
             form: dict | None = None, cookie: str = "") -> tuple[int, dict, str]:
        all_headers = dict(headers or {})
        payload = None
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if form is not None:
            payload = urllib.parse.urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        if cookie:
            all_headers["Cookie"] = cookie
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            conn.close()

    def api(self, method: str, path: str, token: str, body=None) -> tuple[int, dict]:
        status, _, text = self.call(method, API + path, body=body, token=token)
        return status, (json.loads(text) if text else {})

    def scrape(self) -> dict[tuple[str, frozenset], float]:
        status, _, text = self.call("GET", "/metrics", token=TOKEN)
        assert status == 200, status
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def sign_in(self, email: str, password: str) -> int:
        """A browser's sign-in: the form's CSRF token and the cookie it came with, then the POST."""
        status, headers, html = self.call("GET", "/login")
        assert status == 200
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
        jar = SimpleCookie(headers.get("Set-Cookie", ""))
        cookie = "; ".join(f"{k}={v.value}" for k, v in jar.items())
        status, _, _ = self.call("POST", "/login", form={"email": email, "password": password, "csrf_token": csrf},
                                 cookie=cookie)
        return status


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def worker_pids(master: subprocess.Popen) -> set[int]:
    path = Path(f"/proc/{master.pid}/task/{master.pid}/children")
    return {int(pid) for pid in path.read_text().split()} if path.exists() else set()


def wait_until(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def seeded(make_app):
    """The database, migrated, with an admin, a member and their tokens (made by the services)."""
    if not is_postgres():
        pytest.skip("runs in the PostgreSQL half of the suite")
    from flask_migrate import upgrade

    url = metrics_database_url()
    recreate_database(url)
    app = make_app(DATABASE_URL=url)
    with app.app_context():
        upgrade()
    admin = make_user(app, "admin@example.com", role="admin")
    member = make_user(app, "member@example.com")
    return {"url": url, "admin_token": make_token(app, admin), "service_token": make_token(app, admin, service=True),
            "member_id": str(member.id)}


@pytest.fixture
def served(seeded):
    """gunicorn, two workers, multiprocess metrics, the database behind a proxy; stopped after."""
    url = make_url(seeded["url"])
    proxy = TcpProxy(url.port or 5432)
    proxy.start()
    stub = StubProvider(mode="ok").start()
    multiproc = Path(tempfile.mkdtemp(prefix="switchboard-metrics-"))
    (multiproc / "counter_999999.db").write_bytes(b"stale counts of an earlier run")
    env = {k: v for k, v in os.environ.items() if k not in _APP_VARIABLES}
    env.update({
        "DATABASE_URL": url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A, "SWITCHBOARD_ENV": "production",
        "SESSION_COOKIE_SECURE": "false", "SWITCHBOARD_INSTANCE_PATH": str(multiproc.parent / (multiproc.name + "-i")),
        "REDIS_URL": "", "PRIVATE_BASE_URL_ALLOWLIST": "127.0.0.1", "PYTHONPATH": PROJECT_ROOT,
        "METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    })
    port = free_port()
    log_path = multiproc.parent / (multiproc.name + ".log")
    with open(log_path, "wb") as log:
        master = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "deploy/gunicorn.conf.py", "--bind",
             f"127.0.0.1:{port}", "--workers", "2", "--graceful-timeout", "2", "--log-level", "warning"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(port)

    def ready() -> bool:
        if master.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            return server.call("GET", "/healthz")[0] == 200 and len(worker_pids(master)) == 2
        return False

    try:
        wait_until(ready, "gunicorn to answer /healthz with two workers")
        yield server, master, multiproc, proxy, stub
    finally:
        master.send_signal(signal.SIGINT)
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(timeout=10)
        proxy.stop()
        stub.stop()
        log = log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]


def test_every_metric_adds_up_across_two_workers_and_survives_a_worker_restart(seeded, served):
    server, master, multiproc, proxy, stub = served
    admin, service = seeded["admin_token"], seeded["service_token"]
    assert not (multiproc / "counter_999999.db").exists()  # emptied when the server started

    # Setup through the API: a provider with a key the stub accepts, and a model config.
    status, provider = server.api("POST", "/ai-providers", admin, {"type": "openai", "name": "served",
                                                                    "base_url": stub.url + "/v1"})
    assert status == 201
    status, config = server.api("POST", "/model-configs", admin, {"ai_provider_id": provider["id"], "model": "gpt-4o"})
    assert status == 201
    ask = {"user_id": seeded["member_id"], "model_config_id": config["id"]}
    before = server.scrape()

    # HTTP requests: 40 at once, so both workers take some.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: server.api("GET", f"/ai-providers/{provider['id']}", admin)[0], range(40)))
    assert statuses == [200] * 40
    served_by = {re.match(r"histogram_(\d+)\.db$", p.name).group(1) for p in multiproc.glob("histogram_*.db")}
    assert len(served_by) == 2, "both workers should have served requests"

    # Credentials hand-outs, by result.
    assert server.api("POST", "/credentials", service, ask)[1]["reason"] == "missing_api_key"
    # Not a canary key: POST /credentials hands it back over http.client, its one allowed place,
    # which the leak canary only knows how to exempt for the test client.
    status, key = server.api("POST", f"/ai-providers/{provider['id']}/keys", admin,
                             {"api_key": "sk-served-" + uuid.uuid4().hex})
    assert status == 201
    assert server.api("POST", "/credentials", service, ask)[1]["available"] is True
    assert server.api("POST", "/credentials", service, {**ask, "user_id": str(uuid.uuid4())})[0] == 404
    assert server.api("POST", "/credentials", service, {**ask, "model_config_id": str(uuid.uuid4())})[0] == 404
    assert server.api("POST", "/credentials", service, {**ask, "user_id": "nope"})[0] == 400

    # Key tests.
    for _ in range(2):
        status, tested = server.api("POST", f"/ai-providers/{provider['id']}/keys/{key['id']}/test", admin, {})
        assert (status, tested["result"]) == (200, "ok")

    # Sign-ins: one that works, then failures until the limiter refuses (its counters are per worker
    # without Redis, so how many failures it takes depends on which worker answers each).
    assert server.sign_in("admin@example.com", PASSWORD) == 302
    attempts = []
    while 429 not in attempts:
        attempts.append(server.sign_in("member@example.com", "wrong password"))
        assert len(attempts) <= 11
    assert set(attempts) == {401, 429}

    # The database goes away: three requests answered 503.
    proxy.stop()
    unavailable = [server.api("GET", "/me", admin)[0] for _ in range(3)]
    proxy.start()
    assert unavailable == [503] * 3

    expected = {
        ("switchboard_http_requests_total", (("method", "GET"), ("route", PROVIDER_RULE), ("status", "200"))): 40,
        ("switchboard_http_request_duration_seconds_count", (("method", "GET"), ("route", PROVIDER_RULE))): 40,
        ("switchboard_credentials_handouts_total", (("result", "available"),)): 1,
        ("switchboard_credentials_handouts_total", (("result", "missing_api_key"),)): 1,
        ("switchboard_credentials_handouts_total", (("result", "user_not_found"),)): 1,
        ("switchboard_credentials_handouts_total", (("result", "config_not_found"),)): 1,
        ("switchboard_credentials_handouts_total", (("result", "invalid_request"),)): 1,
        ("switchboard_key_tests_total", (("result", "ok"),)): 2,
        ("switchboard_login_attempts_total", (("method", "password"), ("result", "ok"))): 1,
        ("switchboard_login_attempts_total", (("method", "password"), ("result", "failed"))): attempts.count(401),
        ("switchboard_login_attempts_total", (("method", "password"), ("result", "rate_limited"))): attempts.count(429),
        ("switchboard_database_unavailable_total", ()): 3,
    }

    def deltas(samples) -> dict:
        return {key: value(samples, key[0], **dict(key[1])) - value(before, key[0], **dict(key[1])) for key in expected}

    # Each scrape (either worker may answer) shows both workers' counts.
    for _ in range(4):
        assert deltas(server.scrape()) == expected

    # A worker stops and gunicorn starts another: nothing it counted is lost.
    old = worker_pids(master)
    victim = min(old)
    os.kill(victim, signal.SIGTERM)
    wait_until(lambda: len(worker_pids(master)) == 2 and victim not in worker_pids(master), "a new worker")
    wait_until(lambda: server.call("GET", "/healthz")[0] == 200, "the server to answer")
    for _ in range(4):
        assert deltas(server.scrape()) == expected
    assert server.api("GET", f"/ai-providers/{provider['id']}", admin)[0] == 200
    for key in list(expected)[:2]:  # the request and its duration
        expected[key] += 1
    assert deltas(server.scrape()) == expected
