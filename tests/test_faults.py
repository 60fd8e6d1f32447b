"""Fault injection: the database connection killed mid-write, the database unreachable at start
and coming back, Redis going away under the login limit, and a full SQLite disk.

Nothing here stops a shared server: PostgreSQL and Redis are reached through a TCP proxy that the
test opens and closes, and a connection is killed with `pg_terminate_backend` on its own backend
only. Figures (recovery times) go to the terminal summary.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tests.conftest import resolved_database_url
from tests.support import (
    _APP_VARIABLES,
    KEY_A,
    PASSWORD,
    PROJECT_ROOT,
    SECRET_KEY,
    Api,
    get_csrf,
    make_token,
    make_user,
    new_key,
)

RECOVERY_LIMIT_SECONDS = 5.0


class _Figures:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.lines:
            terminalreporter.section("faults")
            for line in self.lines:
                terminalreporter.write_line(line)


_FIGURES = _Figures()


@pytest.fixture
def figures(request):
    if not request.config.pluginmanager.is_registered(_FIGURES):
        request.config.pluginmanager.register(_FIGURES, "switchboard-fault-figures")
    return _FIGURES


def report(figures: _Figures, line: str) -> None:
    figures.lines.append(line)
    print(line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """A TCP forwarder on 127.0.0.1:`port` to 127.0.0.1:`upstream_port` that the test can close
    (refusing new connections and cutting the open ones) and open again on the same port."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def up(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def count(app, table: str, where: str = "TRUE", **params) -> int:
    from app.extensions import db

    with app.app_context():
        value = db.session.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar_one()
        db.session.rollback()
        return value


# --- a connection killed while a write is in flight (PostgreSQL) ---------------------------------


def kill_on(app, statement_prefix: str):
    """Install a listener that, on the first statement starting with `statement_prefix`, has
    PostgreSQL terminate the backend of the connection about to run it (from another connection),
    and waits until that backend is gone. Returns (fired pids, remove function)."""
    from app.extensions import db

    with app.app_context():
        engine = db.engine
    killer = sa.create_engine(resolved_database_url(), poolclass=sa.pool.NullPool)
    fired: list[int] = []

    def before_cursor_execute(_conn, cursor, statement, _parameters, _context, _executemany):
        if fired or not statement.lstrip().upper().startswith(statement_prefix.upper()):
            return
        pid = cursor.connection.info.backend_pid
        fired.append(pid)
        with killer.connect() as other:
            assert other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            for _ in range(100):
                if not other.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                     {"pid": pid}).scalar_one():
                    break
                time.sleep(0.02)

    event.listen(engine, "before_cursor_execute", before_cursor_execute)

    def remove() -> None:
        event.remove(engine, "before_cursor_execute", before_cursor_execute)
        killer.dispose()

    return fired, remove


def assert_unavailable(response) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == {"message": "Service temporarily unavailable."}


@pytest.mark.postgres_only
def test_connection_killed_mid_insert_answers_503_writes_nothing_and_the_next_request_works(app, admin_api):
    fired, remove = kill_on(app, "INSERT INTO ai_providers")
    try:
        response = admin_api.post("/ai-providers", json={"type": "openai", "name": "interrupted"})
    finally:
        remove()
    assert len(fired) == 1
    assert_unavailable(response)
    assert count(app, "ai_providers") == 0
    assert count(app, "audit_events", "action LIKE 'provider.%'") == 0

    again = admin_api.post("/ai-providers", json={"type": "openai", "name": "interrupted"})
    assert again.status_code == 201
    assert count(app, "ai_providers") == 1
    assert count(app, "audit_events", "action = 'provider.create'") == 1


@pytest.mark.postgres_only
def test_connection_killed_at_the_last_step_of_a_provider_deletion_leaves_it_whole(app, admin_api, member_api):
    """Deletion removes keys, user keys and configs before it marks the provider: killed at that
    last statement, all of them are still there, as if the request had never come."""
    pid = admin_api.post("/ai-providers", json={"type": "openai", "name": "whole",
                                                "key_policy": "user_preferred"}).get_json()["id"]
    for _ in range(2):
        assert admin_api.post(f"/ai-providers/{pid}/keys", json={"api_key": new_key()}).status_code == 201
    assert member_api.put(f"/user-ai-provider-keys/{pid}", json={"api_key": new_key()}).status_code == 200
    assert admin_api.post("/model-configs", json={"ai_provider_id": pid, "model": "gpt-4o"}).status_code == 201

    fired, remove = kill_on(app, "UPDATE ai_providers")
    try:
        response = admin_api.delete(f"/ai-providers/{pid}")
    finally:
        remove()
    assert len(fired) == 1
    assert_unavailable(response)
    assert count(app, "ai_providers", "NOT deleted") == 1
    assert count(app, "ai_provider_keys") == 2
    assert count(app, "user_ai_provider_keys") == 1
    assert count(app, "chat_model_configs", "NOT deleted AND is_default") == 1
    assert count(app, "audit_events", "action = 'provider.delete'") == 0

    assert admin_api.delete(f"/ai-providers/{pid}").status_code == 204
    assert count(app, "ai_provider_keys") + count(app, "user_ai_provider_keys") == 0


# --- the database unreachable at start, and going away later (PostgreSQL) -------------------------


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until `predicate()` held, or None if it never did within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(interval)
    return None


@pytest.fixture
def gunicorn_through_proxy(app, tmp_path):
    """`gunicorn wsgi:app` (2 workers) whose DATABASE_URL goes through a proxy that starts closed."""
    url = make_url(resolved_database_url())
    proxy = TcpProxy(url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _APP_VARIABLES}
    env.update({"DATABASE_URL": proxied, "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A,
                "SWITCHBOARD_INSTANCE_PATH": str(tmp_path / "instance"), "PYTHONPATH": PROJECT_ROOT})
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "--graceful-timeout",
         "5", "wsgi:app"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proxy, port, server, tmp_path / "gunicorn.log"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log.close()
        proxy.stop()


@pytest.mark.postgres_only
@pytest.mark.slow
def test_started_while_the_database_is_unreachable_the_app_stays_up_and_recovers(
        app, admin, gunicorn_through_proxy, figures):
    proxy, port, server, log = gunicorn_through_proxy
    token = make_token(app, admin)

    assert wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=30) is not None, log.read_text()
    status, headers = get(port, "/readyz")
    assert (status, headers.get("Retry-After")) == (503, "5")
    status, headers = get(port, "/api/experimental/chats/me", {"Authorization": f"Bearer {token}"})
    assert (status, headers.get("Retry-After")) == (503, "5")
    assert get(port, "/login")[0] == 503
    time.sleep(1)  # still up after a while, answering
    assert server.poll() is None
    assert "the database cannot be reached" in log.read_text()

    proxy.start()
    recovery = wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=RECOVERY_LIMIT_SECONDS)
    assert recovery is not None, f"/readyz still 503 {RECOVERY_LIMIT_SECONDS} s after the database came back"
    report(figures, f"database back after an unreachable start: /readyz 200 after {recovery:.2f} s (no restart)")
    # Both workers serve (the deferred key check ran in each), with no restart.
    for _ in range(6):
        assert get(port, "/api/experimental/chats/me", {"Authorization": f"Bearer {token}"})[0] == 200

    proxy.stop()  # the database goes away under a running app (open connections cut)
    assert wait_for(lambda: get(port, "/readyz")[0] == 503, timeout=10) is not None
    assert get(port, "/api/experimental/chats/me", {"Authorization": f"Bearer {token}"})[0] == 503
    proxy.start()
    recovery = wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=RECOVERY_LIMIT_SECONDS)
    assert recovery is not None
    report(figures, f"database back after going away while serving: /readyz 200 after {recovery:.2f} s")
    for _ in range(6):
        assert get(port, "/api/experimental/chats/me", {"Authorization": f"Bearer {token}"})[0] == 200
    assert server.poll() is None


@pytest.mark.postgres_only
def test_a_failed_key_check_once_the_database_answers_keeps_the_app_closed(make_app, app, admin_api, capsys):
    """Deferred, the encryption-key check still fails closed: with keys that cannot read the
    database, nothing but /healthz is served once the database answers."""
    import base64

    from app.startup import run_startup_checks

    pid = admin_api.post("/ai-providers", json={"type": "openai", "name": "held"}).get_json()["id"]
    assert admin_api.post(f"/ai-providers/{pid}/keys", json={"api_key": new_key()}).status_code == 201
    proxy = TcpProxy(make_url(resolved_database_url()).port or 5432)
    url = make_url(resolved_database_url()).set(host="127.0.0.1", port=proxy.port)
    # Only another key configured: the stored key (under KEY_A) could not be read.
    wrong = make_app(DATABASE_URL=url.render_as_string(hide_password=False),
                     ENCRYPTION_KEYS=base64.b64encode(b"C" * 32).decode())
    try:
        run_startup_checks(wrong)  # the database is unreachable: deferred, the process goes on
        assert "cannot be reached" in capsys.readouterr().err
        client = wrong.test_client()
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        proxy.start()
        me = client.get("/api/experimental/chats/me", headers={"Authorization": f"Bearer {admin_api.token}"})
        assert me.status_code == 503
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
    finally:
        proxy.stop()


# --- Redis going away under the login limit -------------------------------------------------------


def failed_login(client, ip: str, email: str = "guess@example.com"):
    token = get_csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": "not the password", "csrf_token": token},
                       environ_base={"REMOTE_ADDR": ip})


def test_with_redis_unreachable_from_the_start_the_sixth_failed_login_is_429(make_app, member):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    client = app.test_client()
    assert [failed_login(client, "203.0.113.61").status_code for _ in range(5)] == [401] * 5
    assert failed_login(client, "203.0.113.61").status_code == 429
    token = get_csrf(client, "/login")  # the right password is refused too while limited
    right = client.post("/login", data={"email": member.email, "password": PASSWORD, "csrf_token": token},
                        environ_base={"REMOTE_ADDR": "203.0.113.61"})
    assert right.status_code == 429


def test_redis_going_away_mid_count_never_lifts_the_login_limit(make_app, member, figures):
    import redis

    proxy = TcpProxy(6379)
    proxy.start()
    prefix = f"switchboard-faults-{uuid.uuid4().hex}"
    server = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        app = make_app(REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0", RATELIMIT_KEY_PREFIX=prefix)
        client = app.test_client()
        assert [failed_login(client, "203.0.113.62").status_code for _ in range(3)] == [401] * 3
        assert any(True for _ in server.scan_iter(match=f"*{prefix}*")), "the first failures were counted in Redis"
        proxy.stop()  # Redis goes away
        after = []
        for _ in range(6):
            after.append(failed_login(client, "203.0.113.62").status_code)
        assert after[-1] == 429 and set(after) <= {401, 429}
        limited_from = after.index(429)
        assert after[limited_from:] == [429] * (len(after) - limited_from)
        report(figures, f"redis gone after 3 counted failures: failures allowed before 429 again: {limited_from} "
                        f"(limit 5; the count restarts in process memory, the limit is never lifted)")
    finally:
        proxy.stop()
        for key in server.scan_iter(match=f"*{prefix}*"):
            server.delete(key)
        server.close()


# --- a full disk (SQLite) --------------------------------------------------------------------------


def test_sqlite_full_disk_answers_503_writes_nothing_and_stays_intact(make_app, tmp_path, figures):
    import sqlite3

    from flask_migrate import upgrade

    from app.extensions import db
    from app.services.secrets import check_keys_against_database

    path = tmp_path / "full.db"
    app = make_app(DATABASE_URL=f"sqlite:///{path}", INSTANCE_PATH=str(tmp_path / "instance"))
    with app.app_context():
        upgrade()
        check_keys_against_database()
        engine = db.engine
    admin = make_user(app, "admin@example.com", role="admin")
    api = Api(app.test_client(), make_token(app, admin))
    pid = api.post("/ai-providers", json={"type": "openai", "name": "filling"}).get_json()["id"]

    with app.app_context():
        pages = db.session.execute(sa.text("PRAGMA page_count")).scalar_one()
        db.session.rollback()

    def cap(dbapi_connection, _record) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 8}")

    event.listen(engine, "connect", cap)
    engine.dispose()
    try:
        stored = 0
        for _ in range(200):
            before = (count(app, "ai_provider_keys"), count(app, "audit_events"))
            response = api.post(f"/ai-providers/{pid}/keys", json={"api_key": new_key() + "x" * 8000})
            if response.status_code != 201:
                break
            stored += 1
        assert_unavailable(response)
        assert (count(app, "ai_provider_keys"), count(app, "audit_events")) == before
        assert len(api.get(f"/ai-providers/{pid}/keys").get_json()) == stored  # reads still work
    finally:
        event.remove(engine, "connect", cap)
        engine.dispose()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert api.post(f"/ai-providers/{pid}/keys", json={"api_key": new_key()}).status_code == 201
    report(figures, f"sqlite full after {stored} keys: 503 with Retry-After, nothing written, integrity_check ok")
    Path(path).unlink()
