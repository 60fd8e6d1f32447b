"""Mass assignment: no write route lets a caller set a field it does not offer.

JSON routes (every POST, PUT and PATCH under the API prefix): the route's sample body plus one
protected or unknown field (`id`, `user_id`, `deleted`, `created_at`, `key_digest`, `ciphertext`,
`fingerprint`, `role`, `is_service`, read-only answer fields such as `has_api_key`, and on PATCH the
immutable `type`, `provider` and `ai_provider_id`...) is refused with 400 and a validation naming
that field, and the database is exactly as it was (audit log included), with nothing sent to a
provider. The sample body alone then succeeds, so the refusal was about the extra field.

HTML forms (every POST page): WTForms ignores fields a form does not declare, by design. Each
form is posted twice on identical fresh data: once with its sample fields, once with the same
fields plus the protected ones. Both runs must change the database in the same way (same rows
added, removed and changed, same values once ids, times and random strings are mapped to
names), and no injected value may be found anywhere afterwards.

The routes come from `MATRIX` in test_authz_matrix.py, whose keys are checked against the URL map
there (and the write routes again here), so a new write route is covered as soon as it has a row,
and fails until it has a sample body.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import truncate_all
from tests.support.leak_canary import scan_database
from tests.test_authz_matrix import (
    MATRIX,
    OK,
    ROLES,
    Call,
    World,
    database_rows,
    is_api,
    stub_fixture,  # noqa: F401 (the `stub` fixture)
    url_map_routes,
    world_fixture,  # noqa: F401 (the `world` fixture)
)

INJECTED_ID = "0badc0de-0000-4000-8000-00000000dead"
WHEN = "2001-02-03T04:05:06Z"
WRITE_METHODS = ("POST", "PUT", "PATCH")
JSON_WRITES = sorted(k for k in MATRIX if k[0] in WRITE_METHODS and is_api(k[1]))
FORM_WRITES = sorted(k for k in MATRIX if k[0] in WRITE_METHODS and not is_api(k[1]))
IMMUTABLE_ON_PATCH = {"type": "anthropic", "provider": "google", "ai_provider_id": INJECTED_ID}


def protected_fields(world: World) -> dict[str, Any]:
    """Fields no write route offers: columns a caller must not set, and read-only answer fields."""
    someone_else = str(world.member_b.id)
    return {
        "id": INJECTED_ID, "user_id": someone_else, "owner_id": someone_else, "created_by": someone_else,
        "provider_id": INJECTED_ID, "deleted": True, "deleted_at": WHEN, "created_at": WHEN, "updated_at": WHEN,
        "revoked_at": WHEN, "last_used_at": WHEN, "deactivated_at": WHEN, "key_digest": "bad0bad",
        "ciphertext": "aW5qZWN0ZWQ=", "api_key_ciphertext": "aW5qZWN0ZWQ=", "fingerprint": "f00d" * 16,
        "hint": "...hack", "role": "admin", "is_admin": True, "is_service": True, "active": False,
        "password_hash": "$plain$injected", "token_hash": "0bad" * 16, "email": "hijack@example.com",
        "has_provider_api_key": True, "has_api_key": True, "has_user_api_key": True, "byok_enabled": True,
        "key_source": "user", "not_a_field": "surprise",
    }


def injections(world: World, method: str, body: dict | None) -> dict[str, Any]:
    fields = protected_fields(world)
    if method == "PATCH":
        fields.update(IMMUTABLE_ON_PATCH)
    return {name: value for name, value in fields.items() if name not in (body or {})}


def allowed_role(method: str, rule: str) -> str:
    """Someone the matrix allows to call the route (the one it is meant for first)."""
    row = dict(zip(ROLES, MATRIX[(method, rule)], strict=True))
    for role in ("anonymous", "member_a", "admin", "service"):
        if row[role] == OK:
            return role
    return "anonymous"  # nobody may (e.g. /setup once users exist): still posted, still changes nothing


def ways_for(role: str) -> str:
    return {"anonymous": "none", "service": "bearer"}.get(role, "session")


def test_the_write_routes_are_those_of_the_url_map(app):
    writes = {k for k in url_map_routes(app) if k[0] in WRITE_METHODS}
    assert writes == set(JSON_WRITES) | set(FORM_WRITES)


# --- JSON: refused with 400 naming the field, nothing changed ---------------------------------------


def rows_but_audited_refusals(app) -> dict[str, list[str]]:
    """`database_rows` without the audit events of refused credential hand-outs: POST
    /credentials writes one for every call, refused ones included (SPEC section 6)."""
    rows = database_rows(app)
    rows["audit_events"] = [r for r in rows["audit_events"]
                            if not ("'credentials.hand_out'" in r and "'invalid_request'" in r)]
    return rows


@pytest.mark.parametrize(("method", "rule"), JSON_WRITES, ids=[f"{m} {r}" for m, r in JSON_WRITES])
def test_json_write_refuses_protected_and_unknown_fields(world, method, rule):
    role = allowed_role(method, rule)
    call = Call(world, role, "bearer", method, rule)
    assert isinstance(call.body, dict), f"{method} {rule}: the sample body must be a JSON object"
    extra = injections(world, method, call.body)
    assert "not_a_field" in extra and ("type" in extra or method != "PATCH")
    before, hits = rows_but_audited_refusals(world.app), len(world.stub.hits)

    for field, value in extra.items():
        response = call.send({**call.body, field: value})
        label = f"{role}: {method} {call.path} with {field!r}"
        assert response.status_code == 400, f"{label} answered {response.status_code}: {response.get_data(as_text=True)}"
        fields = [v["field"] for v in response.get_json().get("validations", [])]
        assert field in fields, f"{label}: no validation names the field: {response.get_json()}"
        assert rows_but_audited_refusals(world.app) == before, f"{label} changed the database"
    assert len(world.stub.hits) == hits, "a refused body still reached the provider"

    everything = call.send({**call.body, **extra})
    assert everything.status_code == 400
    assert {v["field"] for v in everything.get_json()["validations"]} >= set(extra) - set(IMMUTABLE_ON_PATCH)
    assert rows_but_audited_refusals(world.app) == before

    control = call.send()
    assert 200 <= control.status_code < 300, f"the sample body of {method} {rule} is refused: {control.get_json()}"


# --- HTML forms: extra fields are ignored, and change nothing ---------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_RANDOM_HEX = re.compile(r"[0-9a-f]{8,}")
_HINT = re.compile(r"\.\.\.[A-Za-z0-9_-]{4}\b")
# Columns whose values are random each time (salted hashes, token prefixes, hints of random keys).
_OPAQUE = frozenset({"password_hash", "prefix", "hint", "api_key_hint"})


def _labels(world: World, call: Call) -> dict[str, str]:
    """Ids of the run's own objects, mapped to names shared by both runs."""
    labels = {str(world.user(r).id): r for r in ("admin", "member_a", "member_b")}
    objects = call.objects.__dict__
    if "provider" in objects:
        p = objects["provider"]
        labels.update({p["id"]: "provider", p["key_id"]: "provider key", p["config_id"]: "model config"})
    if "legacy" in objects:
        labels[objects["legacy"]["id"]] = "legacy provider"
    if "token_id" in objects:
        labels[objects["token_id"]] = "member A's token"
    if "user_id" in objects:
        labels[objects["user_id"]] = "user to deactivate"
    if "group" in objects:
        labels[objects["group"]["id"]] = "group"
    labels[INJECTED_ID] = "INJECTED"
    return labels


def _norm(value: Any, column: str, labels: dict[str, str]) -> str:
    if value is None:
        return "None"
    if isinstance(value, bytes | memoryview):
        return "<bytes>"
    if isinstance(value, datetime):
        return "<2001>" if value.year == 2001 else "<time>"
    if column in _OPAQUE:
        return "<opaque>"
    if column == "id" and isinstance(value, int):
        return "<serial>"  # the audit log's ids keep counting after the first run's rows are gone
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    text = _UUID.sub(lambda m: f"<{labels.get(m.group(), 'new id')}>", text)
    text = text.replace(INJECTED_ID.replace("-", ""), "<INJECTED>")
    return _RANDOM_HEX.sub("<hex>", _HINT.sub("...<hint>", text))


def _raw_rows(app) -> dict[str, dict[tuple, dict[str, Any]]]:
    from app.extensions import db

    tables = {}
    with app.app_context(), db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            pk = [c.name for c in table.primary_key.columns]
            tables[table.name] = {
                tuple(str(row[c]) for c in pk): dict(row) for row in conn.execute(sa.select(table)).mappings()}
    return tables


def _changes(before, after, labels: dict[str, str]) -> list[str]:
    """What a request did to the database, with ids, times and random strings made comparable."""
    changes = []
    for table, rows in after.items():
        old = before[table]
        for pk, row in rows.items():
            values = {c: _norm(v, c, labels) for c, v in row.items()}
            if pk not in old:
                changes.append(f"added {table} {sorted(values.items())}")
                continue
            changed = {c: v for c, v in values.items() if _norm(old[pk][c], c, labels) != v or old[pk][c] != row[c]}
            if changed:
                key = [_norm(v, "", labels) for v in pk]
                changes.append(f"changed {table} {key}: {sorted(changed.items())}")
        for pk, row in old.items():
            if pk not in rows:
                changes.append(f"removed {table} {sorted((c, _norm(v, c, labels)) for c, v in row.items())}")
    return sorted(changes)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "y" if value else ""
    return str(value)


def _post_once(app, stub, method: str, rule: str, inject: bool):
    world = World(app, stub)
    role = allowed_role(method, rule)
    call = Call(world, role, ways_for(role), method, rule)
    extra = {k: _form_value(v) for k, v in injections(world, method, call.body).items()} if inject else {}
    labels = _labels(world, call)
    before = _raw_rows(app)
    response = call.send(extra_form=extra)
    after = _raw_rows(app)
    return response, _changes(before, after, labels), extra


@pytest.mark.parametrize(("method", "rule"), FORM_WRITES, ids=[f"{m} {r}" for m, r in FORM_WRITES])
def test_form_post_with_extra_fields_changes_nothing_more(app, stub, request, method, rule):
    app.config["PRIVATE_BASE_URL_ALLOWLIST"] = "127.0.0.1"
    app.config["OUTBOUND_RATE_LIMIT"] = "1000 per minute"

    plain, expected, _ = _post_once(app, stub, method, rule, inject=False)
    scan_database(app, request.node.nodeid)  # the leak canary sees this run's rows too
    truncate_all(app)
    injected, changes, extra = _post_once(app, stub, method, rule, inject=True)

    assert extra, "nothing was injected"
    assert injected.status_code == plain.status_code
    assert changes == expected, f"{method} {rule}: the extra fields {sorted(extra)} changed something"
    dump = json.dumps(database_rows(app))
    for marker in ("hijack@example.com", "bad0bad", "...hack", "$plain$injected", "f00df00d", "0bad0bad",
                   "aW5qZWN0ZWQ=", "surprise", INJECTED_ID, INJECTED_ID.replace("-", ""), "datetime(2001"):
        assert marker not in dump, f"{method} {rule}: the injected {marker!r} is in the database"
