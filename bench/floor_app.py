"""The floor: the least a JSON route of Switchboard can do, served the same way as the app.

One Flask route that authenticates the same bearer token with one indexed lookup (SHA-256 of the
token -> `api_tokens.token_hash`, a unique index) and answers that row as JSON. No ORM, no
blueprints, no error pages, no security headers. bench/run.py serves it with gunicorn, like the
app, on the same database and against the same token, and reports every route's throughput as
a ratio to this one, measured in the same run.

    DATABASE_URL=postgresql+psycopg://... gunicorn -w 2 'bench.floor_app:app'
"""

from __future__ import annotations

import hashlib
import os

import sqlalchemy as sa
from flask import Flask, jsonify, request

app = Flask(__name__)
engine = sa.create_engine(os.environ["DATABASE_URL"], pool_size=10, max_overflow=10, pool_pre_ping=True)
TOKEN_ROW = sa.text(
    "SELECT id, name, prefix, is_service, created_at FROM api_tokens "
    "WHERE token_hash = :token_hash AND revoked_at IS NULL"
)


@app.get("/floor")
def floor():
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return jsonify({"message": "Unauthorized."}), 401
    with engine.connect() as conn:
        row = conn.execute(TOKEN_ROW, {"token_hash": hashlib.sha256(token.encode()).hexdigest()}).first()
    if row is None:
        return jsonify({"message": "Unauthorized."}), 401
    return jsonify({"id": str(row.id), "name": row.name, "prefix": row.prefix, "is_service": row.is_service,
                    "created_at": row.created_at.isoformat()})
