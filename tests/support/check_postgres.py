"""Fail loudly (never skip) when the test PostgreSQL cannot be reached; create its database."""

import os
import sys

import psycopg
from psycopg import sql

url = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/switchboard_test")
if not url.startswith("postgresql"):
    sys.exit(0)
conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
dbname = conninfo.rsplit("/", 1)[1].split("?", 1)[0]
admin = conninfo.rsplit("/", 1)[0] + "/postgres"
try:
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            print(f"created database {dbname}")
except psycopg.OperationalError as error:
    print(
        f"PostgreSQL is not reachable at {admin.split('@')[-1]} ({error.__class__.__name__}).\n"
        "Start it with:  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
        "or point TEST_DATABASE_URL at a server you can use. The PostgreSQL half of the suite is not skipped.",
        file=sys.stderr,
    )
    sys.exit(2)
