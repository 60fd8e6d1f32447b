"""The production recipe (deploy/, `make serve`) started as an operator starts it: the launcher
deploy/serve.py with the committed nginx and gunicorn configuration, in production mode, on
PostgreSQL, on a free loopback port. nginx must be installed (`make test` installs Debian's when
missing); its absence fails these tests, it never skips them.

Only the PostgreSQL half runs them (production is PostgreSQL), like the browser tests."""

from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import KEY_A, PASSWORD, PROJECT_ROOT, SECRET_KEY, is_postgres
from tests.support.servers import APP_VARIABLES, free_port, recreate_database, sibling_database_url

pytestmark = pytest.mark.postgres_only

SLOW_CLIENTS = 50
ANSWER_WITHIN = 2.0  # seconds: the acceptance bound of SPEC section 12


@dataclass
class Recipe:
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (gunicorn's master and workers, nginx's master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until_serving(recipe: Recipe) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if recipe.process.poll() is not None:
            raise RuntimeError(f"the launcher exited with {recipe.process.returncode}:\n{recipe.log()[-3000:]}")
        try:
            if get(recipe.port, "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the recipe did not answer /healthz within 60 s:\n{recipe.log()[-3000:]}")


@pytest.fixture(scope="module")
def recipe():
    if not is_postgres():
        pytest.skip("the production recipe runs in the PostgreSQL half of the suite")
    if not any(os.access(p, os.X_OK) for p in ("/usr/sbin/nginx", "/usr/bin/nginx")):
        pytest.fail("nginx is missing: `make serve-deps` (part of `make test`) installs Debian's")
    url = sibling_database_url("_serve")
    recreate_database(url)
    instance = Path(tempfile.mkdtemp(prefix="switchboard-serve-test-"))
    env = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
    env.update({
        "DATABASE_URL": url, "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A, "SWITCHBOARD_ENV": "production",
        "SESSION_COOKIE_SECURE": "false", "SWITCHBOARD_INSTANCE_PATH": str(instance),
        # As in production: the workers share their rate-limit counters (in memory, each counts alone).
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ALLOW_BYOK": "true", "PRIVATE_BASE_URL_ALLOWLIST": "", "PYTHONPATH": PROJECT_ROOT,
        "WEB_CONCURRENCY": "2",  # the machine has 2 cores, as the benchmark assumes
    })
    for command in (["db", "upgrade"], ["users", "create", "member@example.com", "--password", PASSWORD]):
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *command], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]

    env["PORT"] = str(free_port())
    log_path = instance / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "deploy/serve.py"], cwd=PROJECT_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    running = Recipe(int(env["PORT"]), process, log_path)
    started: set[int] = set()
    try:
        _wait_until_serving(running)
        started = _descendants(process.pid)
        yield running
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        leftovers = sorted(pid for pid in started if _alive(pid))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        log = running.log()
        shutil.rmtree(instance, ignore_errors=True)
        assert not leftovers, f"processes left running after Ctrl-C: {leftovers}\n{log[-2000:]}"
        assert process.returncode == 0, log[-3000:]


def get(port: int, path: str, source: str = "127.0.0.1", headers: dict | None = None, method: str = "GET",
        body: str | None = None, timeout: float = 30) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


class SlowClients:
    """`count` connections that each send a request's headers one byte per second."""

    def __init__(self, port: int, count: int) -> None:
        self.request = (f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slow\r\n"
                        "Accept: */*\r\n\r\n").encode()
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
        self.sent = 0  # bytes sent on every connection so far
        self.stopped = threading.Event()
        self.progress = threading.Condition()
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def _drip(self) -> None:
        while not self.stopped.is_set() and self.sent < len(self.request) - 1:  # never the final byte
            byte = self.request[self.sent:self.sent + 1]
            for sock in self.sockets:
                sock.sendall(byte)
            with self.progress:
                self.sent += 1
                self.progress.notify_all()
            self.stopped.wait(1.0)  # the attack's pace: one byte a second

    def wait_until_sent(self, count: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.sent >= count, timeout=count + 10)

    def all_still_open(self) -> bool:
        """No server has answered or closed any of them (a recv would not block otherwise)."""
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK) is not None:
                    return False
            except BlockingIOError:
                continue
        return True

    def __enter__(self) -> SlowClients:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


@pytest.mark.slow
def test_an_ordinary_request_answers_within_2_s_while_50_clients_send_headers_a_byte_a_second(recipe):
    with SlowClients(recipe.port, SLOW_CLIENTS) as slow:
        slow.wait_until_sent(2)  # gunicorn alone: every worker is stuck on one of them by now
        for path, status in (("/healthz", 200), ("/login", 200)):  # /login asks the database whether users exist
            started = time.monotonic()
            try:
                answered = get(recipe.port, path, timeout=10)[0]
            except TimeoutError:
                pytest.fail(f"GET {path}: no answer within 10 s with {SLOW_CLIENTS} slow clients")
            elapsed = time.monotonic() - started
            assert answered == status, path
            assert elapsed < ANSWER_WITHIN, f"GET {path} took {elapsed:.2f} s with {SLOW_CLIENTS} slow clients"
        assert slow.all_still_open()  # the slow clients were still there throughout


def test_behind_the_recipes_nginx_each_client_address_has_its_own_sign_in_budget(recipe):
    """TRUSTED_PROXIES=1 with the nginx configuration: the app sees the client's address, not the
    proxy's (or every client would share one budget), and not what a client writes in X-Forwarded-For."""

    def failed_sign_in(source: str, email: str, headers: dict | None = None) -> int:
        _, answer_headers, page = get(recipe.port, "/login", source)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        cookie = answer_headers["set-cookie"].split(";", 1)[0]
        form = urllib.parse.urlencode({"csrf_token": token, "email": email, "password": "wrong guess!"})
        return get(recipe.port, "/login", source, method="POST", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, **(headers or {})})[0]

    # Addresses of this run only (all of 127.0.0.0/8 is loopback): the counters live in a shared Redis.
    net = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}"
    # Other emails each time: only the per-address budget is spent.
    for n in range(5):
        assert failed_sign_in(f"{net}.61", f"guess{n}@example.com", {"X-Forwarded-For": f"10.1.2.{n}"}) == 401
    assert failed_sign_in(f"{net}.61", "guess5@example.com") == 429
    assert failed_sign_in(f"{net}.61", "guess6@example.com", {"X-Forwarded-For": f"{net}.62"}) == 429
    assert failed_sign_in(f"{net}.62", "guess7@example.com") == 401
