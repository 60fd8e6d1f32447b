"""Key rotation benchmark: rows per second, and whether memory grows with the number of rows.

For each size N (default: 10,000 then 100,000) it creates a throwaway PostgreSQL database, builds
the schema with the migrations, seeds N provider keys sealed under key A (bulk inserts of
pre-sealed rows), then rotates them to key B with the real service (`keymanagement.rotate`) in a
fresh child process, and verifies them. The child reports its peak resident memory
(`ru_maxrss`) before and after, so a rotation that held rows in memory would show a peak
growing with N. The database is dropped at the end.

    .venv/bin/python bench/rotate_bench.py                 # N = 10000 and 100000
    .venv/bin/python bench/rotate_bench.py 100000          # one size
    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/other .venv/bin/python bench/rotate_bench.py
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/switchboard_bench_rotate"
KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
PROVIDERS = 100
INSERT_CHUNK = 5_000


def make_app(url: str, keys: str):
    from app import create_app

    return create_app({
        "SWITCHBOARD_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ENCRYPTION_KEYS": keys,
        "DATABASE_URL": url,
        "INSTANCE_PATH": tempfile.mkdtemp(prefix="switchboard-bench-"),
    })


def recreate_database(url: str, drop_only: bool = False) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = conninfo.rsplit("/", 1)[1].split("?", 1)[0]
    if not name.startswith("switchboard_bench"):
        raise SystemExit(f"refusing to drop {name!r}: the bench database's name must start with switchboard_bench")
    with psycopg.connect(conninfo.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not drop_only:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def seed(url: str, n: int) -> float:
    """Build the schema and insert `n` provider keys sealed under key A; return the seconds taken."""
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from app.crypto import associated_data, make_hint
    from app.extensions import db
    from app.models import AIProvider, AIProviderKey
    from app.services.secrets import ensure_key_registered, keyring

    app = make_app(url, KEY_A)
    started = time.monotonic()
    with app.app_context():
        upgrade()
        ring = keyring()
        ensure_key_registered(ring.primary_digest)
        providers = [uuid.uuid4() for _ in range(PROVIDERS)]
        db.session.execute(sa.insert(AIProvider.__table__), [
            {"id": pid, "type": "openai", "name": f"bench-{i}", "display_name": f"Bench {i}", "enabled": True,
             "deleted": False, "base_url": "", "key_policy": "provider_only"}
            for i, pid in enumerate(providers)
        ])
        db.session.commit()
        table = AIProviderKey.__table__
        now = datetime.now(UTC)
        for start in range(0, n, INSERT_CHUNK):
            chunk = []
            for i in range(start, min(start + INSERT_CHUNK, n)):
                row_id, provider_id = uuid.uuid4(), providers[i % PROVIDERS]
                plaintext = f"sk-bench-{secrets.token_hex(20)}"
                sealed = ring.encrypt(plaintext.encode(), associated_data("ai_provider_keys", "ciphertext", row_id, provider_id))
                chunk.append({"id": row_id, "provider_id": provider_id, "ciphertext": sealed.ciphertext,
                              "key_digest": sealed.digest, "hint": make_hint(plaintext),
                              "fingerprint": secrets.token_hex(32), "created_at": now, "updated_at": now})
            db.session.execute(sa.insert(table), chunk)
            db.session.commit()
        db.session.execute(sa.text("ANALYZE"))
        db.session.commit()
        db.engine.dispose()
    return time.monotonic() - started


def rotate_child(url: str, batch_size: int) -> None:
    """Run in a fresh process: rotate to key B, verify, print the figures as JSON."""
    from app.services import keymanagement

    app = make_app(url, f"{KEY_B},{KEY_A}")
    with app.app_context():
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rotation = keymanagement.rotate(batch_size=batch_size)
        after_rotate = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        verification = keymanagement.verify(batch_size=batch_size)
        after_verify = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "reencrypted": rotation.reencrypted, "failed": rotation.failed, "rotate_seconds": rotation.seconds,
        "revoked": rotation.revoked, "verified_ok": verification.ok, "unreadable": verification.unreadable,
        "verify_seconds": verification.seconds, "rss_baseline_kb": baseline, "rss_rotate_kb": after_rotate,
        "rss_verify_kb": after_verify,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000], help="numbers of secrets")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rotate-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if args.rotate_child:
        rotate_child(url, args.batch_size)
        return

    results = []
    try:
        for n in args.sizes:
            recreate_database(url)
            seconds = seed(url, n)
            print(f"N={n:,}: seeded in {seconds:.1f} s; rotating...", file=sys.stderr)
            child = subprocess.run(
                [sys.executable, __file__, "--rotate-child", "--batch-size", str(args.batch_size)],
                env={**os.environ, "BENCH_DATABASE_URL": url}, capture_output=True, text=True, check=True,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            if (figures["reencrypted"], figures["failed"], figures["verified_ok"], figures["unreadable"]) != (n, 0, n, 0):
                raise SystemExit(f"N={n}: unexpected result {figures}")
            results.append((n, figures))
    finally:
        recreate_database(url, drop_only=True)

    print(f"batch size {args.batch_size}; PostgreSQL at {url.split('@')[-1]}")
    print(f"{'N':>9}  {'rotate s':>8}  {'rows/s':>7}  {'verify rows/s':>13}  {'RSS before':>10}  "
          f"{'peak rotate':>11}  {'peak verify':>11}")
    for n, f in results:
        print(
            f"{n:>9,}  {f['rotate_seconds']:>8.1f}  {n / f['rotate_seconds']:>7,.0f}  "
            f"{n / f['verify_seconds']:>13,.0f}  {f['rss_baseline_kb'] / 1024:>7.1f} MB  "
            f"{f['rss_rotate_kb'] / 1024:>8.1f} MB  {f['rss_verify_kb'] / 1024:>8.1f} MB"
        )


if __name__ == "__main__":
    main()
