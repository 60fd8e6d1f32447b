"""Prometheus metrics (SPEC section 11): the metric objects, the HTTP hooks and `GET /metrics`.

Names and labels are a contract (dashboards and alerts depend on them):

| metric | labels | counted where |
|---|---|---|
| `switchboard_http_requests_total` | method, route, status | every response (`after_request`) |
| `switchboard_http_request_duration_seconds` (histogram) | method, route | every response |
| `switchboard_credentials_handouts_total` | result | `resolution.hand_out_credentials` |
| `switchboard_key_tests_total` | result | `key_testing` (every key test: page or API) |
| `switchboard_login_attempts_total` | method, result | the sign-in view; `rate_limited` here (429 on auth.login) |
| `switchboard_database_unavailable_total` | - | `errorhandlers`, where a 503 answers an unreachable database |

No label holds a user id, an email, a key or a token: `route` is the URL rule
(`/api/experimental/chats/ai-providers/<provider_id>`, never the raw path; `<unmatched>` when no
rule matched), `method` is one of the HTTP methods the app knows (anything else is `other`), and
the `result` values are fixed sets named by the code that counts. The number of series therefore
does not grow with traffic.

Several gunicorn workers: when `PROMETHEUS_MULTIPROC_DIR` is set (before the first import of
prometheus_client), every worker writes its counts to files in that directory and `/metrics` adds
them up across workers, including workers that have exited (a restarted worker's counts are not
lost). The directory must be emptied when the server starts (`on_starting`) and each exited
worker is marked dead (`child_exit`): deploy/gunicorn.conf.py (the production recipe's) wires both hooks. Without the
variable (tests, `flask run`) the process's default registry is used.

`GET /metrics` answers only with `Authorization: Bearer <METRICS_TOKEN>`: 404 while the variable is
unset (as if there were no such route), 401 for a missing or wrong token (compared in constant time).
"""

from __future__ import annotations

import hmac
import os
import shutil
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"
METHODS = frozenset(("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"))
LOGIN_METHODS = ("password", "oidc")
LOGIN_RESULTS = ("ok", "failed", "rate_limited")
LOGIN_ENDPOINT = "auth.login"

HTTP_REQUESTS = Counter(
    "switchboard_http_requests_total", "HTTP requests answered, by method, URL rule and status.",
    ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "switchboard_http_request_duration_seconds", "Time to answer an HTTP request, by method and URL rule.",
    ["method", "route"])
CREDENTIALS_HANDOUTS = Counter(
    "switchboard_credentials_handouts_total",
    "POST /credentials calls: `available`, or the reason no key was handed out.", ["result"])
KEY_TESTS = Counter("switchboard_key_tests_total", "Key tests sent to providers, by result.", ["result"])
LOGIN_ATTEMPTS = Counter(
    "switchboard_login_attempts_total", "Sign-in attempts, by method (password, oidc) and result.",
    ["method", "result"])
DATABASE_UNAVAILABLE = Counter(
    "switchboard_database_unavailable_total", "Requests answered 503 because the database could not be reached.")


# --- counting (called at the one place each outcome is known) ------------------------------------

def count_handout(result: str) -> None:
    """One credentials hand-out: `available`, or the reason it was refused or unavailable."""
    CREDENTIALS_HANDOUTS.labels(result).inc()


def count_key_test(result: str) -> None:
    """One key test (one of `key_testing.RESULTS`)."""
    KEY_TESTS.labels(result).inc()


def count_login(method: str, result: str) -> None:
    """One sign-in attempt: `method` in LOGIN_METHODS, `result` in LOGIN_RESULTS."""
    if method not in LOGIN_METHODS or result not in LOGIN_RESULTS:
        raise ValueError(f"unknown login attempt label {method!r}/{result!r}")
    LOGIN_ATTEMPTS.labels(method, result).inc()


def count_database_unavailable() -> None:
    DATABASE_UNAVAILABLE.inc()


# --- wiring -------------------------------------------------------------------------------------

def init_metrics(app: Flask) -> None:
    """Time and count every request, and serve `GET /metrics`. Called by `create_app` before the
    blueprints, so its `before_request` runs first and times the whole request."""
    for result in LOGIN_RESULTS:
        LOGIN_ATTEMPTS.labels("password", result)  # present (at 0) before the first sign-in

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
        if request.endpoint == LOGIN_ENDPOINT and request.method == "POST" and response.status_code == 429:
            # The sign-in view never answers 429 itself: this is the limiter refusing the attempt.
            count_login("password", "rate_limited")
        return response

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics_view, methods=["GET"])


def metrics_view() -> Response:
    """The metrics in Prometheus' text format. :raise 404: METRICS_TOKEN unset. 401: wrong token."""
    expected = current_app.config.get("METRICS_TOKEN")
    if not expected:
        abort(404)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return Response("Unauthorized.\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


def _registry() -> Any:
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


# --- gunicorn hooks (see deploy/gunicorn.conf.py) --------------------------------------------------

def on_starting(server: Any) -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR when the server starts: counts of an earlier run must not
    be added to this one's."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges go; its counters and histograms stay in the sums."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
