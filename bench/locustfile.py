"""Load test: Locust against gunicorn (4 sync workers) on PostgreSQL, mixing the main reads and
writes for 2 minutes. Run by `make load`; not part of `make test`.

The same file is two things:

- the driver, run with the project's venv (`.venv/bin/python bench/locustfile.py`): it recreates
  the database `switchboard_load*` (only such names are ever created or dropped), builds the
  schema with the migrations, seeds it through the services (an admin, 50 members, a service
  token, 20 providers with 2 keys each, 40 model configs, a key for every member on the BYOK
  providers), starts `gunicorn wsgi:app` with 4 workers, runs Locust headless from its own venv
  (`.venv-bench`, from bench/requirements.txt), stops the server and prints one summary:
  requests per second, p50/p95/p99 and the error rate, overall and per request;
- the Locust scenario (`locust -f bench/locustfile.py`), which reads the seeded ids and tokens
  from the JSON file named by `LOAD_STATE`.

The mix, by weight: members list their keys, save a key (PUT), list the enabled configs and ask
for resolutions; admins list providers, read one, and create then delete a provider; service
tokens ask for credentials. Every request expects exactly one status; anything else, 4xx
included, counts as an error.

    make load                                        # 2 minutes, 24 users
    make load LOAD_ARGS="--users 48 --run-time 30s"
    LOAD_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/switchboard_load_me make load

Tokens, the state file, Locust's CSV files and the gunicorn log go to `$TMPDIR/switchboard-load/`
(mode 0700), never into the repository.
"""

from __future__ import annotations

import json
import os
import random
import uuid

STATE_ENV = "LOAD_STATE"

try:
    from locust import FastHttpUser, between, task
except ImportError:  # the driver runs in the project's venv, without Locust
    FastHttpUser = None


if FastHttpUser is not None:
    _state: dict = {}

    def state() -> dict:
        if not _state:
            with open(os.environ[STATE_ENV]) as fh:
                _state.update(json.load(fh))
        return _state

    class Caller(FastHttpUser):
        abstract = True
        wait_time = between(0.0, 0.1)
        role = ""

        def on_start(self) -> None:
            self.data = state()
            token = random.choice(self.data["tokens"][self.role])
            self.headers = {"Authorization": f"Bearer {token}"}

        def call(self, method: str, path: str, expected: int, name: str, body: dict | None = None):
            with self.client.request(method, "/api/experimental/chats" + path, name=name, headers=self.headers,
                                     json=body, catch_response=True) as response:
                if response.status_code != expected:
                    response.failure(f"{response.status_code} (expected {expected})")
                return response

    class Member(Caller):
        weight = 4
        role = "members"

        @task(3)
        def list_user_keys(self) -> None:
            self.call("GET", "/user-ai-provider-keys", 200, "GET /user-ai-provider-keys")

        @task(1)
        def save_user_key(self) -> None:
            provider_id = random.choice(self.data["byok_provider_ids"])
            self.call("PUT", f"/user-ai-provider-keys/{provider_id}", 200, "PUT /user-ai-provider-keys/{id}",
                      {"api_key": f"sk-load-{uuid.uuid4().hex}"})

        @task(4)
        def enabled_configs(self) -> None:
            self.call("GET", "/model-configs/enabled?limit=50", 200, "GET /model-configs/enabled")

        @task(4)
        def resolution(self) -> None:
            config_id = random.choice(self.data["config_ids"])
            self.call("GET", f"/model-configs/{config_id}/resolution", 200, "GET /model-configs/{id}/resolution")

    class Admin(Caller):
        weight = 1
        role = "admins"

        @task(4)
        def list_providers(self) -> None:
            self.call("GET", "/ai-providers?limit=50", 200, "GET /ai-providers")

        @task(4)
        def get_provider(self) -> None:
            provider_id = random.choice(self.data["provider_ids"])
            self.call("GET", f"/ai-providers/{provider_id}", 200, "GET /ai-providers/{id}")

        @task(1)
        def create_and_delete_provider(self) -> None:
            created = self.call("POST", "/ai-providers", 201, "POST /ai-providers",
                                {"type": "openai", "name": f"load-{uuid.uuid4().hex[:16]}"})
            if created.status_code == 201:
                self.call("DELETE", f"/ai-providers/{created.json()['id']}", 204, "DELETE /ai-providers/{id}")

    class Service(Caller):
        weight = 1
        role = "services"

        @task
        def credentials(self) -> None:
            self.call("POST", "/credentials", 200, "POST /credentials",
                      {"user_id": random.choice(self.data["member_ids"]),
                       "model_config_id": random.choice(self.data["config_ids"])})


# --- the driver (project venv) -------------------------------------------------------------------


def _driver() -> None:
    """Prepare, serve, load, report: one straight script."""
    import argparse
    import base64
    import csv
    import secrets
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    import sqlalchemy as sa

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    parser = argparse.ArgumentParser(description="Locust load test against gunicorn on PostgreSQL.")
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--spawn-rate", type=float, default=12)
    parser.add_argument("--run-time", default="2m")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--locust", default=str(root / ".venv-bench" / "bin" / "locust"))
    parser.add_argument("--database-url", default=os.environ.get(
        "LOAD_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/switchboard_load"))
    args = parser.parse_args()

    url = sa.engine.make_url(args.database_url)
    if not (url.database or "").startswith("switchboard_load"):
        raise SystemExit("refusing: the load database must be named switchboard_load*")
    work = Path(tempfile.gettempdir()) / "switchboard-load"
    work.mkdir(mode=0o700, exist_ok=True)
    keys = base64.b64encode(secrets.token_bytes(32)).decode()
    settings = {"DATABASE_URL": url.render_as_string(hide_password=False), "ENCRYPTION_KEYS": keys,
                "SECRET_KEY": secrets.token_urlsafe(48), "SWITCHBOARD_ENV": "production",
                "SWITCHBOARD_INSTANCE_PATH": str(work / "instance")}

    # 1. A fresh database, migrated and seeded through the services.
    started = time.monotonic()
    admin_engine = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    admin_engine.dispose()
    os.environ.update(settings)
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db
    from app.services import model_configs, provider_keys, providers, tokens, user_keys, users
    from app.services.base import Actor
    from app.services.secrets import check_keys_against_database

    app = create_app({"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 2}})
    system = Actor.system("load seed")
    with app.app_context():
        upgrade()
        check_keys_against_database()
        admin = users.create_user(system, "load-admin@example.com", "Load admin", secrets.token_urlsafe(16), "admin")
        members = [users.create_user(system, f"load-member-{i}@example.com", "", secrets.token_urlsafe(16), "member")
                   for i in range(50)]
        tokens_by_role = {
            "admins": [tokens.create_token(system, admin, f"load admin {i}")[1] for i in range(4)],
            "members": [tokens.create_token(system, member, "load")[1] for member in members],
            "services": [tokens.create_token(system, admin, f"load service {i}", service=True)[1] for i in range(4)],
        }
        policies = ("provider_only", "user_preferred", "user_only")
        created = [providers.create_provider(system, type="openai", name=f"provider-{i:02d}",
                                             key_policy=policies[i % 3], base_url=f"https://p{i}.example.com/v1")
                   for i in range(20)]
        for provider in created:
            for _ in range(2):
                provider_keys.add_key(system, provider.id, f"sk-load-{secrets.token_hex(16)}")
        config_ids = [str(model_configs.create_config(system, ai_provider_id=p.id, model=f"model-{j}").id)
                      for p in created for j in range(2)]
        byok = [p for p in created if p.key_policy != "provider_only"]
        for member in members:
            for provider in byok[:4]:
                user_keys.upsert_user_key(Actor.for_user(users.get_user(member.id)), provider.id,
                                          f"sk-user-{secrets.token_hex(16)}")
        data = {"tokens": tokens_by_role, "member_ids": [str(m.id) for m in members],
                "provider_ids": [str(p.id) for p in created], "byok_provider_ids": [str(p.id) for p in byok],
                "config_ids": config_ids}
        db.session.remove()
        db.engine.dispose()
    state_path = work / "state.json"
    fd = os.open(state_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    print(f"seeded {url.database} in {time.monotonic() - started:.1f} s: 1 admin, 50 members, 20 providers, "
          f"40 provider keys, {len(config_ids)} configs, {50 * 4} user keys")

    # 2. gunicorn, 4 sync workers.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    log = (work / "gunicorn.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", str(args.workers), "--bind",
                               f"127.0.0.1:{port}", "wsgi:app"], cwd=root, env=os.environ.copy(),
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(host + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("gunicorn did not become ready; see " + str(work / "gunicorn.log"))

        # 3. Locust, headless.
        prefix = work / "locust"
        locust = subprocess.run(
            [args.locust, "-f", str(Path(__file__).resolve()), "--headless", "--users", str(args.users),
             "--spawn-rate", str(args.spawn_rate), "--run-time", args.run_time, "--host", host,
             "--csv", str(prefix), "--only-summary", "--stop-timeout", "10"],
            env={**os.environ, STATE_ENV: str(state_path)}, check=False)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    # 4. The figures.
    with open(f"{prefix}_stats.csv") as fh:
        rows = list(csv.DictReader(fh))
    with open(f"{prefix}_failures.csv") as fh:
        failures = list(csv.DictReader(fh))
    print(f"\nLoad: {args.users} users, {args.run_time}, gunicorn {args.workers} workers, PostgreSQL "
          f"({url.database})")
    print(f"{'request':40} {'count':>7} {'errors':>7} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)")
    for row in rows:
        print(f"{row['Name'][:40]:40} {row['Request Count']:>7} "
              f"{row['Failure Count']:>7} {float(row['Requests/s']):7.1f} {row['50%']:>6} {row['95%']:>6} "
              f"{row['99%']:>6}")
    total = next(row for row in rows if row["Name"] == "Aggregated")
    requests, errors = int(total["Request Count"]), int(total["Failure Count"])
    print(f"error rate: {errors}/{requests} = {100 * errors / max(requests, 1):.3f} %")
    for failure in failures:
        print(f"  {failure['Occurrences']} x {failure['Method']} {failure['Name']}: {failure['Error']}")
    server_errors = sum(1 for line in (work / "gunicorn.log").read_text().splitlines() if "unhandled error" in line)
    print(f"server log: {server_errors} unhandled errors")
    raise SystemExit(locust.returncode)


if __name__ == "__main__":
    _driver()
