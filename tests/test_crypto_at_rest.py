"""Secrets at rest (SPEC section 7), checked straight from the database, and the fail-closed start."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import resolved_database_url
from tests.support import KEY_A, KEY_B, PASSWORD, SECRET_KEY, is_postgres, new_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DIGEST_A = hashlib.sha256(b"aes256gcm" + base64.b64decode(KEY_A)).hexdigest()[:7]


def db_value(value):
    """A UUID as raw SQL binds it: native on PostgreSQL, 32 hex characters on SQLite."""
    return value if is_postgres() else uuid.UUID(str(value)).hex


def raw(app, statement, **params):
    from app.extensions import db

    with app.app_context():
        rows = db.session.execute(sa.text(statement), params).all()
        db.session.rollback()
        return rows


def every_value_in_the_database(app) -> list:
    """Every value of every row of every table, as stored."""
    from app.extensions import db

    values = []
    with app.app_context():
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(sa.text(f'SELECT * FROM "{table.name}"')):
                values.extend(row)
        db.session.rollback()
    return values


def forms_of(key: str) -> list[bytes]:
    """The ways a key could sit in a column: UTF-8, base64, hex, UTF-16."""
    data = key.encode()
    return [data, base64.b64encode(data), base64.urlsafe_b64encode(data), data.hex().encode(), key.encode("utf-16-le")]


def as_bytes(value) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def create_provider(api, name):
    response = api.post("/ai-providers", json={"type": "openai", "name": name, "key_policy": "user_preferred"})
    assert response.status_code == 201
    return response.get_json()["id"]


def add_key(api, provider_id, key):
    response = api.post(f"/ai-providers/{provider_id}/keys", json={"api_key": key})
    assert response.status_code == 201
    return response.get_json()["id"]


def seal_user_key(app, user, provider_id, plaintext):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services import secrets

    with app.app_context():
        row = UserAIProviderKey(id=uuid.uuid4(), user_id=user.id, ai_provider_id=uuid.UUID(provider_id))
        secrets.seal(row, plaintext)
        db.session.add(row)
        db.session.commit()
        return str(row.id)


def ciphertext_of(app, table, row_id) -> bytes:
    rows = raw(app, f"SELECT ciphertext FROM {table} WHERE id = :i", i=db_value(row_id))
    assert len(rows) == 1
    return bytes(rows[0][0])


# --- what the database holds -----------------------------------------------------------------


def test_no_stored_value_contains_a_key_in_any_encoding(app, admin_api, member):
    provider_id = create_provider(admin_api, "openai")
    keys = [new_key("rest") for _ in range(3)]
    key_ids = [add_key(admin_api, provider_id, key) for key in keys]
    user_secret = new_key("user-rest")
    seal_user_key(app, member, provider_id, user_secret)

    for key_id in key_ids:
        ciphertext = ciphertext_of(app, "ai_provider_keys", key_id)
        assert len(ciphertext) >= 12 + 16 + len(keys[0])  # nonce, tag, and no compression
    stored = [as_bytes(v) for v in every_value_in_the_database(app) if v is not None]
    for secret in [*keys, user_secret]:
        for form in forms_of(secret):
            assert not any(form in value for value in stored), "a key is readable in the database"
        # nor its secret part, whatever was done to the prefix
        assert not any(secret[10:-4].encode() in value for value in stored)


def test_each_secret_row_names_its_key_digest_and_nonces_are_fresh(app, admin_api):
    first = create_provider(admin_api, "first")
    second = create_provider(admin_api, "second")
    key = new_key("twice")
    a = add_key(admin_api, first, key)
    b = add_key(admin_api, second, key)
    rows = dict(raw(app, "SELECT id, key_digest FROM ai_provider_keys"))
    assert set(rows.values()) == {DIGEST_A}
    assert raw(app, "SELECT digest FROM encryption_keys") == [(DIGEST_A,)]
    ct_a, ct_b = ciphertext_of(app, "ai_provider_keys", a), ciphertext_of(app, "ai_provider_keys", b)
    assert ct_a != ct_b and ct_a[:12] != ct_b[:12]  # the same key twice: different nonce and ciphertext


def test_a_ciphertext_copied_into_another_row_does_not_decrypt(app, admin_api):
    from app.extensions import db
    from app.models import AIProviderKey
    from app.services.secrets import DecryptionError, open_secret

    provider_a = create_provider(admin_api, "a")
    provider_b = create_provider(admin_api, "b")
    key_a, key_a2, key_b = new_key("a"), new_key("a2"), new_key("b")
    row_a = add_key(admin_api, provider_a, key_a)
    row_a2 = add_key(admin_api, provider_a, key_a2)
    row_b = add_key(admin_api, provider_b, key_b)
    stolen = ciphertext_of(app, "ai_provider_keys", row_a)

    with app.app_context():
        # into another key of the same provider, and into a key of another provider
        for target in (row_a2, row_b):
            db.session.execute(sa.text("UPDATE ai_provider_keys SET ciphertext = :c WHERE id = :i"),
                               {"c": stolen, "i": db_value(target)})
        db.session.commit()
        assert open_secret(db.session.get(AIProviderKey, uuid.UUID(row_a))) == key_a
        for target in (row_a2, row_b):
            with pytest.raises(DecryptionError, match="does not decrypt for this row") as refused:
                open_secret(db.session.get(AIProviderKey, uuid.UUID(target)))
            assert key_a not in str(refused.value)
        # moving the row to another provider (same id, same ciphertext) breaks it too
        db.session.execute(sa.text("UPDATE ai_provider_keys SET provider_id = :p WHERE id = :i"),
                           {"p": db_value(provider_b), "i": db_value(row_a)})
        db.session.commit()
        db.session.expire_all()
        with pytest.raises(DecryptionError, match="does not decrypt for this row"):
            open_secret(db.session.get(AIProviderKey, uuid.UUID(row_a)))


def test_a_users_ciphertext_copied_to_another_users_row_does_not_decrypt(app, admin_api, member, member_b):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services.secrets import DecryptionError, open_secret

    provider_id = create_provider(admin_api, "byok")
    mine, theirs = new_key("mine"), new_key("theirs")
    my_row = seal_user_key(app, member, provider_id, mine)
    their_row = seal_user_key(app, member_b, provider_id, theirs)
    with app.app_context():
        db.session.execute(sa.text("UPDATE user_ai_provider_keys SET ciphertext = :c WHERE id = :i"),
                           {"c": ciphertext_of(app, "user_ai_provider_keys", my_row), "i": db_value(their_row)})
        db.session.commit()
        assert open_secret(db.session.get(UserAIProviderKey, uuid.UUID(my_row))) == mine
        with pytest.raises(DecryptionError, match="does not decrypt for this row"):
            open_secret(db.session.get(UserAIProviderKey, uuid.UUID(their_row)))


def test_a_tampered_ciphertext_does_not_decrypt(app, admin_api):
    from app.extensions import db
    from app.models import AIProviderKey
    from app.services.secrets import DecryptionError, open_secret

    provider_id = create_provider(admin_api, "p")
    row = add_key(admin_api, provider_id, new_key())
    ciphertext = bytearray(ciphertext_of(app, "ai_provider_keys", row))
    ciphertext[20] ^= 0x01
    with app.app_context():
        db.session.execute(sa.text("UPDATE ai_provider_keys SET ciphertext = :c WHERE id = :i"),
                           {"c": bytes(ciphertext), "i": db_value(row)})
        db.session.commit()
        with pytest.raises(DecryptionError):
            open_secret(db.session.get(AIProviderKey, uuid.UUID(row)))


def test_deleting_a_key_removes_its_ciphertext(app, admin_api):
    provider_id = create_provider(admin_api, "p")
    gone = add_key(admin_api, provider_id, new_key("gone"))
    kept = add_key(admin_api, provider_id, new_key("kept"))
    gone_ct = ciphertext_of(app, "ai_provider_keys", gone)
    assert admin_api.delete(f"/ai-providers/{provider_id}/keys/{gone}").status_code == 204
    assert raw(app, "SELECT count(*) FROM ai_provider_keys WHERE id = :i", i=db_value(gone)) == [(0,)]
    remaining = [bytes(r[0]) for r in raw(app, "SELECT ciphertext FROM ai_provider_keys")]
    assert remaining == [ciphertext_of(app, "ai_provider_keys", kept)]
    assert gone_ct not in remaining


def test_deleting_a_provider_removes_every_ciphertext_for_it(app, admin_api, member, member_b):
    doomed = create_provider(admin_api, "doomed")
    kept = create_provider(admin_api, "kept")
    for _ in range(2):
        add_key(admin_api, doomed, new_key("doomed"))
    kept_key = add_key(admin_api, kept, new_key("kept"))
    seal_user_key(app, member, doomed, new_key("u1"))
    seal_user_key(app, member_b, doomed, new_key("u2"))
    kept_user = seal_user_key(app, member, kept, new_key("u3"))
    doomed_cts = [bytes(r[0]) for r in raw(
        app, "SELECT ciphertext FROM ai_provider_keys WHERE provider_id = :p UNION ALL "
             "SELECT ciphertext FROM user_ai_provider_keys WHERE ai_provider_id = :p", p=db_value(doomed))]
    assert len(doomed_cts) == 4

    assert admin_api.delete(f"/ai-providers/{doomed}").status_code == 204

    left = [bytes(r[0]) for r in raw(app, "SELECT ciphertext FROM ai_provider_keys UNION ALL "
                                          "SELECT ciphertext FROM user_ai_provider_keys")]
    assert len(left) == 2
    assert not set(doomed_cts) & set(left)
    assert sorted(left) == sorted([ciphertext_of(app, "ai_provider_keys", kept_key),
                                   ciphertext_of(app, "user_ai_provider_keys", kept_user)])
    # the provider row stays (soft-deleted) but holds no secret
    assert raw(app, "SELECT deleted FROM ai_providers WHERE id = :i", i=db_value(doomed)) == [(True,)]


# --- starting the app, as flask and gunicorn do ----------------------------------------------

SHORT_KEY = base64.b64encode(b"s" * 31).decode()
NOT_BASE64 = "this-is-not-base64!!*"


def start(how: str, keys: str | None, tmp_path: Path, env_name: str = "production") -> subprocess.CompletedProcess:
    """Start the app in a fresh process with only these settings, the way an operator would."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEYS", "SWITCHBOARD_ENV", "TEST_DATABASE_URL",
                        "FLASK_APP", "FLASK_DEBUG", "REDIS_URL", "SWITCHBOARD_INSTANCE_PATH")}
    env.update({
        "DATABASE_URL": resolved_database_url(),
        "SECRET_KEY": SECRET_KEY,
        "SWITCHBOARD_ENV": env_name,
        "SWITCHBOARD_INSTANCE_PATH": str(tmp_path / "instance"),
        # present but empty, so no .env file can fill it in
        "ENCRYPTION_KEYS": keys if keys is not None else "",
    })
    bin_dir = Path(sys.executable).parent
    if how == "flask":
        command = [str(bin_dir / "flask"), "--app", "wsgi", "users", "create", "x@example.com", "--password", PASSWORD]
    else:
        command = [sys.executable, "-c", "import wsgi"]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)


def assert_refused(result, *expected, secrets=()):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Switchboard cannot start" in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    for secret in secrets:
        assert secret not in result.stderr and secret not in result.stdout
    assert "Traceback" not in result.stderr


def users_named_x(app):
    return raw(app, "SELECT count(*) FROM users WHERE email = 'x@example.com'")[0][0]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flask", "python"])
def test_rows_under_a_key_that_is_not_configured_stop_the_start(app, admin_api, tmp_path, how):
    provider_id = create_provider(admin_api, "p")
    add_key(admin_api, provider_id, new_key("startup"))
    result = start(how, KEY_B, tmp_path)  # valid base64, 32 bytes, but the rows are under KEY_A
    assert_refused(result, "ENCRYPTION_KEYS", "not configured", DIGEST_A, secrets=(KEY_A, KEY_B))
    assert users_named_x(app) == 0


@pytest.mark.slow
def test_the_right_key_starts(app, admin_api, tmp_path):
    """The control for the test above: the same command with the key the rows were sealed with."""
    provider_id = create_provider(admin_api, "p")
    add_key(admin_api, provider_id, new_key("startup"))
    result = start("flask", KEY_A, tmp_path)
    assert result.returncode == 0, result.stderr
    assert users_named_x(app) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("keys", "expected", "how"), [
    (None, ("ENCRYPTION_KEYS is not set",), "flask"),
    (None, ("ENCRYPTION_KEYS is not set",), "python"),
    (NOT_BASE64, ("ENCRYPTION_KEYS", "key #1 is not valid base64"), "python"),
    (SHORT_KEY, ("ENCRYPTION_KEYS", "key #1 is not 32 bytes"), "flask"),
    (f"{KEY_A},{SHORT_KEY}", ("ENCRYPTION_KEYS", "key #2 is not 32 bytes"), "python"),
])
def test_missing_or_malformed_keys_stop_the_start_without_showing_them(app, tmp_path, keys, expected, how):
    result = start(how, keys, tmp_path)
    assert_refused(result, *expected, secrets=tuple(k for k in (keys or "").split(",") if k))
    assert users_named_x(app) == 0
