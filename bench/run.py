"""HTTP benchmarks of Switchboard on PostgreSQL, side by side with a floor app, into bench/results.md.

What it does:

1. seeds one database per size N (`bench/seed.py`: N providers, 3N provider keys, 10N users with a
   key each, 5N model configs) and times it;
2. serves each size with the production recipe (deploy/serve.py, what `make serve` runs: nginx in
   front of gunicorn `wsgi:app`, 2 sync workers: the machine has 2 cores) and the floor
   (`bench/floor_app.py`, the same way), all at once on their own ports;
3. logs the admin in once (a session cookie, through /login like a browser) and checks every
   request answers 200;
4. runs wrk (`bench/request.lua`) RUNS times over every endpoint: the floor, then that endpoint at
   every size, so each ratio and each growth across sizes compares measurements taken within a
   minute of each other;
5. reads each gunicorn worker's resident memory (VmRSS) before the load and its peak (VmHWM)
   after, from /proc;
6. writes bench/results.md: medians of the runs (requests/s, p50, p99, ratio to the floor), the
   targets met or missed, memory per N, seeding times and the query budget per route. Anything
   below the `<!-- notes -->` line of an existing results.md is kept (hand-written analysis).

    make bench                                        # installs wrk if missing, then this
    .venv/bin/python bench/run.py --sizes 10 1000 --duration 5 --runs 3
    .venv/bin/python bench/run.py --skip-seed         # reuse the databases of the last run

Needs PostgreSQL at BENCH_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432) and wrk.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
PYTHON = sys.executable
LAUNCHER = PROJECT_ROOT / "deploy" / "serve.py"
STATE_DIR = Path(tempfile.gettempdir()) / "switchboard-bench"
RESULTS = BENCH_DIR / "results.md"
NOTES_MARKER = "<!-- notes -->"
API = "/api/experimental/chats"
WORKERS = 2  # sync workers: one per core of this machine

sys.path.insert(0, str(PROJECT_ROOT))


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # may use {provider_id} and {config_id}
    auth: str  # "admin", "member", "service" (bearer tokens) or "cookie" (the admin's session)
    body: str = ""  # may use {member_id} and {config_id}
    kind: str = "read"  # "read", "resolution" (resolution and hand-outs) or "page"
    is_list: bool = False


ENDPOINTS = (
    Endpoint("list providers", "GET", API + "/ai-providers?limit=50", "admin", is_list=True),
    Endpoint("get provider", "GET", API + "/ai-providers/{provider_id}", "admin"),
    Endpoint("caller's user keys", "GET", API + "/user-ai-provider-keys?limit=50", "member", is_list=True),
    Endpoint("enabled model configs", "GET", API + "/model-configs/enabled?limit=50", "member", is_list=True),
    Endpoint("resolution", "GET", API + "/model-configs/{config_id}/resolution", "member", kind="resolution"),
    Endpoint("credentials hand-out", "POST", API + "/credentials", "service",
             body='{{"user_id": "{member_id}", "model_config_id": "{config_id}"}}', kind="resolution"),
    Endpoint("admin providers page", "GET", "/admin/providers", "cookie", kind="page"),
)
FLOOR = Endpoint("floor", "GET", "/floor", "member")

TARGET_READ = 0.6
TARGET_RESOLUTION = 0.5
TARGET_LIST_GROWTH = 1.5
TARGET_PAGE_GROWTH = 2.0
MEMORY_TOLERANCE = 0.05  # peak RSS per worker at the largest N over the smallest


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The production recipe serving `app`: deploy/serve.py (what `make serve` runs), i.e. nginx in
    front of gunicorn's sync workers, on its own port. Only the launcher we started is ever
    signalled; it stops its nginx and gunicorn."""

    def __init__(self, name: str, app: str, env: dict[str, str]) -> None:
        self.name, self.port = name, free_port()
        self.log = open(STATE_DIR / f"serve-{name}.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [PYTHON, str(LAUNCHER), "--app", app],
            cwd=PROJECT_ROOT, env={**os.environ, **env, "PORT": str(self.port), "WEB_CONCURRENCY": str(WORKERS)},
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn {self.name} exited; see {self.log.name}")
            try:
                status, _, _ = request(self.port, "GET", path)
                if status < 500 and len(self.workers()) == WORKERS:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"gunicorn {self.name} did not start in {timeout} s; see {self.log.name}")

    def workers(self) -> list[int]:
        """gunicorn's workers: the children of the launcher's gunicorn master."""
        masters = [pid for pid in _children(self.process.pid) if b"gunicorn" in _cmdline(pid)]
        return sorted(pid for master in masters for pid in _children(master))

    def memory_kb(self) -> dict[int, dict[str, int]]:
        """Each worker's VmRSS (now) and VmHWM (peak), in kB."""
        out = {}
        for pid in self.workers():
            fields = {}
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    fields[name] = int(value.split()[0])
            out[pid] = fields
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def request(port: int, method: str, path: str, body: str = "", headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def login(port: int, email: str, password: str) -> str:
    """Sign in through /login like a browser; returns the Cookie header value of the session."""
    status, headers, page = request(port, "GET", "/login")
    cookies = _cookies(headers, {})
    match = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        rb'<meta name="csrf-token" content="([^"]+)"', page)
    if status != 200 or not match:
        raise SystemExit(f"GET /login answered {status} without a CSRF token")
    form = urllib.parse.urlencode({"csrf_token": match.group(1).decode(), "email": email, "password": password})
    status, headers, _ = request(port, "POST", "/login", form, {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": _cookie_header(cookies)})
    if status not in (302, 303):
        raise SystemExit(f"POST /login answered {status}: the admin could not sign in")
    return _cookie_header(_cookies(headers, cookies))


def _cookies(headers: list[tuple[str, str]], jar: dict[str, str]) -> dict[str, str]:
    jar = dict(jar)
    for name, value in headers:
        if name.lower() == "set-cookie":
            key, _, rest = value.partition("=")
            jar[key.strip()] = rest.split(";", 1)[0]
    return jar


def _cookie_header(jar: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


# --- one size ------------------------------------------------------------------------------------


@dataclass
class Target:
    """An endpoint made concrete for one size: URL, headers and body."""

    endpoint: Endpoint
    n: int
    port: int
    path: str
    body: str
    auth_header: str
    cookie: str

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.body:
            headers["Content-Type"] = "application/json"
        return headers


def targets_for(n: int, state: dict[str, Any], port: int, cookie: str) -> list[Target]:
    out = []
    for ep in ENDPOINTS:
        fill = {"provider_id": state["provider_id"], "config_id": state["config_id"], "member_id": state["member_id"]}
        auth = "" if ep.auth == "cookie" else f"Bearer {state['tokens'][ep.auth]}"
        out.append(Target(ep, n, port, ep.path.format(**fill), ep.body.format(**fill), auth,
                          cookie if ep.auth == "cookie" else ""))
    return out


def check(target: Target) -> None:
    status, _, body = request(target.port, target.endpoint.method, target.path, target.body, target.headers())
    if status != 200:
        raise SystemExit(f"N={target.n} {target.endpoint.name}: {status} {body[:200]!r}")
    if target.endpoint.name == "credentials hand-out" and not json.loads(body).get("api_key"):
        raise SystemExit(f"N={target.n}: the hand-out returned no key: {body[:200]!r}")


def wrk(target: Target, duration: float, connections: int) -> dict[str, Any]:
    env = {**os.environ, "BENCH_METHOD": target.endpoint.method, "BENCH_BODY": target.body,
           "BENCH_AUTH": target.auth_header, "BENCH_COOKIE": target.cookie}
    url = f"http://127.0.0.1:{target.port}{target.path}"
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(BENCH_DIR / "request.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result for {target.endpoint.name}:\n{out}")
    result = json.loads(line.split(" ", 1)[1])
    errors = sum(v for k, v in result.items() if k.startswith("errors_") and k != "errors_read")
    if errors or not result["requests"]:
        raise SystemExit(f"N={target.n} {target.endpoint.name}: wrk saw errors: {result}")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


# --- report --------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def query_budgets() -> dict[str, int]:
    try:
        from tests.test_query_budgets import BUDGETS
    except ImportError:
        return {}
    return dict(BUDGETS)


def write_results(args, seeds: dict[int, dict], measured: dict, memory: dict) -> str:
    """`measured[(name, n)]` is a list of per-run dicts (rps, p50_us, p99_us, ratio)."""
    sizes = args.sizes
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `bench/run.py` on {time.strftime('%Y-%m-%d %H:%M')} (`{' '.join(sys.argv[1:]) or 'defaults'}`).",
        f"The production recipe (`make serve`: nginx in front of gunicorn `wsgi:app`, {WORKERS} sync workers), "
        f"PostgreSQL; wrk 1 thread, {args.connections} connections, "
        f"{args.duration:g} s per measurement, {args.runs} runs; figures are medians of the runs. "
        "Each run measures, endpoint by endpoint, the floor and then that endpoint at every size; an endpoint's "
        "ratio is its throughput over the floor's measured just before it (median of the runs' ratios), and the "
        "floor row is the median of all its measurements. Latencies in milliseconds, under that load "
        f"({args.connections} connections for {WORKERS} workers: p50 includes waiting in gunicorn's queue).",
        "",
        "| endpoint | N | requests/s | p50 ms | p99 ms | ratio to floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary: dict[tuple[str, int], dict[str, float]] = {}
    for ep in (FLOOR, *ENDPOINTS):
        for n in (0,) if ep is FLOOR else sizes:
            runs = measured.get((ep.name, n))
            if not runs:
                continue
            row = {k: median([r[k] for r in runs]) for k in ("rps", "p50_us", "p99_us", "ratio")}
            summary[(ep.name, n)] = row
            size = "any" if ep is FLOOR else f"{n:,}"
            lines.append(f"| {ep.name} | {size} | {row['rps']:.0f} | {ms(row['p50_us'])} | {ms(row['p99_us'])} | "
                         f"{row['ratio']:.2f} |")
    lines += ["", "## Targets", "", "| target | figure | verdict |", "|---|---|---|"]
    for ep in ENDPOINTS:
        if ep.kind == "page":
            continue
        goal = TARGET_RESOLUTION if ep.kind == "resolution" else TARGET_READ
        worst = min((summary[(ep.name, n)]["ratio"], n) for n in sizes if (ep.name, n) in summary)
        verdict = "met" if worst[0] >= goal else "missed"
        lines.append(f"| {ep.name} >= {goal} of floor throughput | lowest {worst[0]:.2f} (N={worst[1]:,}) | {verdict} |")
    small, large = min(sizes), max(sizes)
    if small != large:
        for ep in ENDPOINTS:
            if not ep.is_list:
                continue
            growth = _growth(measured, ep.name, small, large)
            verdict = "met" if growth <= TARGET_LIST_GROWTH else "missed"
            lines.append(f"| {ep.name} (limit=50): p50 at N={large:,} within {TARGET_LIST_GROWTH}x of N={small:,} | "
                         f"{growth:.2f}x | {verdict} |")
        if len(sizes) > 2:
            # N=10 lists hold fewer than 50 rows; between the two largest sizes both pages are full,
            # so this growth is N's alone (the cost of counting the total, mostly).
            middle = sizes[-2]
            for ep in ENDPOINTS:
                if ep.is_list:
                    growth = _growth(measured, ep.name, middle, large)
                    lines.append(f"| (for information) {ep.name}: p50 at N={large:,} over N={middle:,}, both full pages "
                                 f"| {growth:.2f}x | |")
    page_large = 1000 if 1000 in sizes else large
    if small != page_large:
        growth = _growth(measured, "admin providers page", small, page_large)
        verdict = "met" if growth <= TARGET_PAGE_GROWTH else "missed"
        lines.append(f"| admin providers page: p50 at N={page_large:,} within {TARGET_PAGE_GROWTH}x of N={small:,} | "
                     f"{growth:.2f}x | {verdict} |")
    peaks = {n: max(w["VmHWM"] for w in memory[n]["after"].values()) for n in sizes}
    verdict = "met" if peaks[large] <= peaks[small] * (1 + MEMORY_TOLERANCE) else "missed"
    lines.append(f"| peak memory per worker does not grow with N (within {MEMORY_TOLERANCE:.0%}) | "
                 f"{peaks[small] / 1024:.1f} MB at N={small:,}, {peaks[large] / 1024:.1f} MB at N={large:,} | {verdict} |")
    lines += ["", "Latency growth is the median over runs of p50(N large) / p50(N small), both measured in the same run.",
              "", "## Memory per gunicorn worker", "",
              "| N | RSS before load (MB) | peak RSS after all runs (MB) |", "|---:|---|---|"]
    for n in sizes:
        before = ", ".join(f"{w['VmRSS'] / 1024:.1f}" for w in memory[n]["before"].values())
        after = ", ".join(f"{w['VmHWM'] / 1024:.1f}" for w in memory[n]["after"].values())
        lines.append(f"| {n:,} | {before} | {after} |")
    lines += ["", "## Seeding", "", "| N | rows | seconds (migrations + inserts) |", "|---:|---|---:|"]
    for n in sizes:
        seed = seeds[n]
        rows = ", ".join(f"{table} {count:,}" for table, count in seed["counts"].items())
        lines.append(f"| {n:,} | {rows} | {seed['seconds']['total']:.1f} |")
    budgets = query_budgets()
    if budgets:
        lines += ["", "## Query budgets (tests/test_query_budgets.py)", "",
                  "SQL statements per request, the same at 3 and at 30 providers (configs, keys, users); "
                  "authentication included.", "", "| route | statements at most |", "|---|---:|"]
        lines += [f"| `{route}` | {budget} |" for route, budget in budgets.items()]
    notes = ""
    if RESULTS.exists() and NOTES_MARKER in RESULTS.read_text():
        notes = RESULTS.read_text().split(NOTES_MARKER, 1)[1]
    text = "\n".join(lines) + "\n\n" + NOTES_MARKER + (notes or "\n")
    RESULTS.write_text(text)
    return text


def _growth(measured: dict, name: str, small: int, large: int) -> float:
    pairs = zip(measured[(name, small)], measured[(name, large)], strict=True)
    return median([b["p50_us"] / a["p50_us"] for a, b in pairs])


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (2 workers busy, 2 queued)")
    parser.add_argument("--skip-seed", action="store_true", help="reuse the databases and state of the last run")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    args = parser.parse_args()
    args.sizes = sorted(set(args.sizes))
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)

    seeds: dict[int, dict] = {}
    for n in args.sizes:
        state_file = STATE_DIR / f"state_{n}.json"
        if not args.skip_seed:
            print(f"seeding N={n:,}...", file=sys.stderr, flush=True)
            subprocess.run([PYTHON, str(BENCH_DIR / "seed.py"), str(n), "--state", str(state_file)],
                           cwd=PROJECT_ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seeds[n] = json.loads(state_file.read_text())
        print(f"N={n:,}: seeded in {seeds[n]['seconds']['total']:.1f} s", file=sys.stderr, flush=True)

    servers: dict[Any, Server] = {}
    try:
        for n in args.sizes:
            servers[n] = Server(f"app-{n}", "wsgi:app", seeds[n]["settings"])
        small = args.sizes[0]
        servers["floor"] = Server("floor", "bench.floor_app:app", seeds[small]["settings"])
        for n in args.sizes:
            servers[n].wait_ready("/healthz")
        servers["floor"].wait_ready("/floor")

        targets: dict[int, list[Target]] = {}
        floors: dict[int, Target] = {}
        for n in args.sizes:
            cookie = login(servers[n].port, seeds[n]["admin_email"], seeds[n]["password"])
            targets[n] = targets_for(n, seeds[n], servers[n].port, cookie)
            for target in targets[n]:
                check(target)
        # The floor serves the smallest size's database and authenticates its member token.
        floors[small] = Target(FLOOR, small, servers["floor"].port, FLOOR.path, "",
                               f"Bearer {seeds[small]['tokens']['member']}", "")
        check(floors[small])

        print("warming up...", file=sys.stderr, flush=True)
        for target in [floors[small], *(t for n in args.sizes for t in targets[n])]:
            wrk(target, 1, args.connections)
        memory = {n: {"before": servers[n].memory_kb()} for n in args.sizes}

        # Endpoint by endpoint: the floor, then the endpoint at every size, so that each ratio and
        # each growth across sizes compares measurements taken within a minute of each other.
        measured: dict[tuple[str, int], list[dict]] = {}
        for run in range(1, args.runs + 1):
            for index in range(len(ENDPOINTS)):
                floor = wrk(floors[small], args.duration, args.connections)
                floor["ratio"] = 1.0
                measured.setdefault((FLOOR.name, 0), []).append(floor)
                for n in args.sizes:
                    target = targets[n][index]
                    result = wrk(target, args.duration, args.connections)
                    result["ratio"] = result["rps"] / floor["rps"]
                    measured.setdefault((target.endpoint.name, n), []).append(result)
                    print(f"run {run} N={n:,} {target.endpoint.name}: {result['rps']:.0f} req/s, "
                          f"p50 {ms(result['p50_us'])} ms, ratio {result['ratio']:.2f} (floor {floor['rps']:.0f})",
                          file=sys.stderr, flush=True)
        for n in args.sizes:
            memory[n]["after"] = servers[n].memory_kb()
    finally:
        for server in servers.values():
            server.stop()
        if not args.keep:
            from bench.seed import recreate_database

            for n in args.sizes:
                if n in seeds:
                    recreate_database(seeds[n]["url"], drop_only=True)

    raw = {"args": vars(args), "measured": {f"{name}|{n}": runs for (name, n), runs in measured.items()},
           "memory": {str(n): m for n, m in memory.items()}}
    (STATE_DIR / "measurements.json").write_text(json.dumps(raw, indent=1))
    print(write_results(args, seeds, measured, memory))


if __name__ == "__main__":
    main()
