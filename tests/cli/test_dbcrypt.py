"""Key management for secrets at rest (`dbcrypt status|rotate|verify|delete`), through the CLI
a operator uses, with the database checked directly where the CLI's word is not enough."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.crypto import DecryptionError, Keyring
from app.extensions import db
from app.models import (
    PROVIDER_TYPES,
    AIProvider,
    AIProviderKey,
    AuditEvent,
    ChatProvider,
    EncryptionKey,
    UserAIProviderKey,
    UserChatProviderKey,
)
from app.services import keymanagement
from app.services.secrets import SECRET_COLUMNS, StartupCheckError, check_keys_against_database, open_secret, seal
from app.startup import run_startup_checks
from tests.conftest import resolved_database_url
from tests.support import KEY_A, KEY_B, SECRET_KEY, is_postgres, make_user, new_key

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DIGEST_A = Keyring.from_config(KEY_A).primary_digest
DIGEST_B = Keyring.from_config(KEY_B).primary_digest
SECRET_MODELS = [spec.model for spec in SECRET_COLUMNS]
USERS = 4
PROVIDERS = 5
# Secrets outside ai_provider_keys: one legacy key per chat provider type, one user key per
# user and provider, one legacy user key per user and chat provider.
FIXED = len(PROVIDER_TYPES) + USERS * PROVIDERS + USERS * len(PROVIDER_TYPES)


@pytest.fixture
def use_keys(app):
    """Configure ENCRYPTION_KEYS for the rest of the test (conftest restores the config only)."""
    saved = app.extensions["switchboard.keyring"]

    def configure(*keys: str) -> None:
        app.config["ENCRYPTION_KEYS"] = ",".join(keys)
        app.extensions["switchboard.keyring"] = Keyring.from_config(app.config["ENCRYPTION_KEYS"])

    yield configure
    app.extensions["switchboard.keyring"] = saved


def seed_secrets(app, total: int) -> dict[tuple[str, uuid.UUID], str]:
    """`total` secrets under the current primary key, in every encrypted table: {(table, id): plaintext}."""
    assert total > FIXED
    users = [make_user(app) for _ in range(USERS)]
    plaintexts: dict[tuple[str, uuid.UUID], str] = {}
    with app.app_context():
        providers = [AIProvider(id=uuid.uuid4(), type="openai", name=f"provider-{i}") for i in range(PROVIDERS)]
        legacy = [ChatProvider(id=uuid.uuid4(), provider=t, display_name=t) for t in PROVIDER_TYPES]
        db.session.add_all([*providers, *legacy])
        db.session.flush()
        rows: list = list(legacy)
        rows += [UserAIProviderKey(id=uuid.uuid4(), user_id=u.id, ai_provider_id=p.id) for u in users for p in providers]
        rows += [UserChatProviderKey(id=uuid.uuid4(), user_id=u.id, chat_provider_id=c.id) for u in users for c in legacy]
        rows += [
            AIProviderKey(id=uuid.uuid4(), provider_id=providers[i % PROVIDERS].id, fingerprint=uuid.uuid4().hex)
            for i in range(total - FIXED)
        ]
        for row in rows:
            plaintexts[(row.__tablename__, row.id)] = key = new_key("dbcrypt")
            seal(row, key)
        db.session.add_all(rows)
        db.session.commit()
    return plaintexts


def read_all_secrets(app) -> dict[tuple[str, uuid.UUID], str]:
    with app.app_context():
        found = {}
        for model in SECRET_MODELS:
            for row in db.session.execute(sa.select(model)).scalars():
                if model is ChatProvider and row.api_key_ciphertext is None:
                    continue
                found[(model.__tablename__, row.id)] = open_secret(row)
        return found


def plain_columns(app) -> dict[tuple[str, object], tuple]:
    """Every column but ciphertext and digest, of every row of the encrypted tables."""
    with app.app_context():
        snapshot = {}
        for spec in SECRET_COLUMNS:
            table = spec.model.__table__
            skip = {spec.column, getattr(spec.model, spec.digest_attr).property.columns[0].name}
            columns = [c for c in table.c if c.name not in skip]
            for row in db.session.execute(sa.select(*columns)):
                snapshot[(spec.table, row.id)] = tuple(row)
        return snapshot


def key_status(app) -> keymanagement.KeyStatus:
    with app.app_context():
        return keymanagement.status()


def revoked_at(app, digest: str):
    with app.app_context():
        return db.session.get(EncryptionKey, digest).revoked_at


def assert_no_plaintext(output: str) -> None:
    assert "sk-canary" not in output


def test_rotation_moves_every_secret_to_the_new_key(app, runner, use_keys):
    plaintexts = seed_secrets(app, 1000)
    before = plain_columns(app)
    state = key_status(app)
    assert state.rows_under(DIGEST_A) == 1000
    assert all(state.rows_in(spec.table) > 0 for spec in SECRET_COLUMNS)

    use_keys(KEY_B, KEY_A)
    status = runner.invoke(args=["dbcrypt", "status"])
    assert status.exit_code == 0
    assert "1000 rows are under an older key: run `dbcrypt rotate`." in status.output

    result = runner.invoke(args=["dbcrypt", "rotate", "--batch-size", "128"])
    assert result.exit_code == 0, result.output
    assert "1000 re-encrypted, 0 already current, 0 failed" in result.stdout
    assert f"Revoked key digest(s) {DIGEST_A}" in result.stdout
    assert_no_plaintext(result.output)

    state = key_status(app)
    assert state.rows_under(DIGEST_A) == 0
    assert state.rows_under(DIGEST_B) == 1000
    assert revoked_at(app, DIGEST_A) is not None
    assert revoked_at(app, DIGEST_B) is None
    status = runner.invoke(args=["dbcrypt", "status"])
    line_a = next(line for line in status.stdout.splitlines() if line.strip().startswith(DIGEST_A))
    assert line_a.split()[-1] == "0" and "Z" in line_a  # no rows, and a revocation time
    assert "All 1000 secrets are under the primary key." in status.stdout
    assert plain_columns(app) == before  # hints, owners and timestamps are untouched

    verify = runner.invoke(args=["dbcrypt", "verify"])
    assert verify.exit_code == 0
    assert verify.stdout.splitlines()[-1] == "1000 ok, 0 unreadable"
    assert_no_plaintext(verify.output)

    use_keys(KEY_B)  # the old key can go now
    assert read_all_secrets(app) == plaintexts

    again = runner.invoke(args=["dbcrypt", "rotate"])
    assert again.exit_code == 0
    assert "0 re-encrypted, 1000 already current, 0 failed" in again.stdout


def test_a_rotation_killed_half_way_completes_when_run_again(app, runner, use_keys):
    plaintexts = seed_secrets(app, 1000)
    use_keys(KEY_B, KEY_A)

    def kill_at_fourth_batch(batch_number: int) -> None:
        if batch_number == 4:
            raise KeyboardInterrupt

    with app.app_context(), pytest.raises(KeyboardInterrupt):
        keymanagement.rotate(batch_size=100, fail_hook=kill_at_fourth_batch)

    state = key_status(app)
    assert state.rows_under(DIGEST_B) == 300  # three committed batches, the fourth rolled back
    assert state.rows_under(DIGEST_A) == 700
    assert revoked_at(app, DIGEST_A) is None

    result = runner.invoke(args=["dbcrypt", "rotate", "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    assert "700 re-encrypted, 300 already current, 0 failed" in result.stdout
    assert key_status(app).rows_under(DIGEST_A) == 0
    assert revoked_at(app, DIGEST_A) is not None
    verify = runner.invoke(args=["dbcrypt", "verify"])
    assert verify.stdout.splitlines()[-1] == "1000 ok, 0 unreadable"
    use_keys(KEY_B)
    assert read_all_secrets(app) == plaintexts


def flip_a_byte(app, model, row_id) -> bytes:
    """Tamper with a stored ciphertext behind the app's back; return what is now stored."""
    table = model.__table__
    column = "api_key_ciphertext" if model is ChatProvider else "ciphertext"
    with app.app_context():
        stored = db.session.execute(sa.select(table.c[column]).where(table.c.id == row_id)).scalar_one()
        tampered = stored[:20] + bytes([stored[20] ^ 0x01]) + stored[21:]
        db.session.execute(sa.update(table).where(table.c.id == row_id).values({column: tampered}))
        db.session.commit()
    return tampered


def test_a_tampered_ciphertext_fails_verify_and_rotation_naming_its_row(app, runner, use_keys):
    plaintexts = seed_secrets(app, 100)
    provider_key = next(row_id for table, row_id in plaintexts if table == "ai_provider_keys")
    legacy_user_key = next(row_id for table, row_id in plaintexts if table == "user_chat_provider_keys")
    tampered = flip_a_byte(app, AIProviderKey, provider_key)
    flip_a_byte(app, UserChatProviderKey, legacy_user_key)

    verify = runner.invoke(args=["dbcrypt", "verify"])
    assert verify.exit_code == 1
    assert f"unreadable: ai_provider_keys {provider_key}" in verify.stdout
    assert f"unreadable: user_chat_provider_keys {legacy_user_key}" in verify.stdout
    assert verify.stdout.splitlines()[-1] == "98 ok, 2 unreadable"
    assert_no_plaintext(verify.output)

    use_keys(KEY_B, KEY_A)
    rotate = runner.invoke(args=["dbcrypt", "rotate", "--batch-size", "7"])
    assert rotate.exit_code == 1
    assert f"failed: ai_provider_keys {provider_key}" in rotate.stdout
    assert "98 re-encrypted, 0 already current, 2 failed" in rotate.stdout
    assert_no_plaintext(rotate.output)
    with app.app_context():
        row = db.session.get(AIProviderKey, provider_key)
        assert (row.ciphertext, row.key_digest) == (tampered, DIGEST_A)  # left as it was
    assert key_status(app).rows_under(DIGEST_A) == 2
    assert revoked_at(app, DIGEST_A) is None  # rows still use it


def test_delete_without_yes_explains_and_deletes_nothing(app, runner):
    plaintexts = seed_secrets(app, 100)
    result = runner.invoke(args=["dbcrypt", "delete"])
    assert result.exit_code == 1
    assert f"{100 - FIXED}  AI provider keys" in result.stdout
    assert f"{USERS * PROVIDERS}  user keys (BYOK)" in result.stdout
    assert f"{USERS * len(PROVIDER_TYPES)}  legacy user keys" in result.stdout
    assert "Nothing was deleted." in result.output
    assert read_all_secrets(app) == plaintexts
    assert revoked_at(app, DIGEST_A) is None
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent)
                                  .where(AuditEvent.action == "secrets.delete_all")).scalar_one() == 0


def test_delete_yes_leaves_no_ciphertext_and_records_the_counts(app, runner, admin):
    seed_secrets(app, 100)
    result = runner.invoke(args=["dbcrypt", "delete", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Deleted 100 secrets" in result.stdout

    with app.app_context():
        def scalar(sql: str) -> int:
            return db.session.execute(sa.text(sql)).scalar_one()

        assert scalar("SELECT count(*) FROM ai_provider_keys") == 0
        assert scalar("SELECT count(*) FROM user_ai_provider_keys") == 0
        assert scalar("SELECT count(*) FROM user_chat_provider_keys") == 0
        assert scalar("SELECT count(*) FROM chat_providers") == len(PROVIDER_TYPES)  # the providers stay
        assert scalar("SELECT count(*) FROM chat_providers WHERE api_key_ciphertext IS NOT NULL "
                      "OR api_key_digest IS NOT NULL OR api_key_hint IS NOT NULL") == 0
        assert scalar("SELECT count(*) FROM encryption_keys WHERE revoked_at IS NULL") == 0
        assert scalar("SELECT count(*) FROM users") == USERS + 1
        event = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "secrets.delete_all")).scalar_one()
        assert event.actor_label == "cli"
        assert event.details["deleted"] == {
            "ai_provider_keys": 100 - FIXED,
            "user_ai_provider_keys": USERS * PROVIDERS,
            "chat_providers": len(PROVIDER_TYPES),
            "user_chat_provider_keys": USERS * len(PROVIDER_TYPES),
        }
        assert event.details["total_deleted"] == 100
        assert event.details["revoked_digests"] == [DIGEST_A]
    # Every digest is revoked, so the app refuses to start until a new key comes first.
    with app.app_context(), pytest.raises(StartupCheckError, match="revoked"):
        check_keys_against_database()

    verify = runner.invoke(args=["dbcrypt", "verify"])
    assert verify.stdout.splitlines()[-1] == "0 ok, 0 unreadable"


def test_startup_refuses_a_revoked_primary_key(app, runner, use_keys, capsys):
    seed_secrets(app, FIXED + 1)
    use_keys(KEY_B, KEY_A)
    assert runner.invoke(args=["dbcrypt", "rotate"]).exit_code == 0
    run_startup_checks(app)  # B first: fine

    use_keys(KEY_A, KEY_B)  # the revoked key put back first by mistake
    with app.app_context(), pytest.raises(StartupCheckError, match=f"digest {DIGEST_A}, was revoked"):
        check_keys_against_database()
    with pytest.raises(SystemExit) as stopped:
        run_startup_checks(app)
    assert stopped.value.code == 1
    assert "Switchboard cannot start" in capsys.readouterr().err
    rotate = runner.invoke(args=["dbcrypt", "rotate"])
    assert rotate.exit_code == 1
    assert f"The primary key (digest {DIGEST_A}) was revoked" in rotate.output


def flask_cli(*args: str, keys: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`flask --app wsgi ARGS` as an operator runs it, on the test database, in production mode."""
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("REDIS_URL", "ALLOW_BYOK", "FLASK_APP", "FLASK_DEBUG", "SESSION_COOKIE_SECURE")}
    env = {
        **inherited,
        "DATABASE_URL": resolved_database_url(),
        "SECRET_KEY": SECRET_KEY,
        "ENCRYPTION_KEYS": keys,
        "SWITCHBOARD_ENV": "production",
        "SWITCHBOARD_INSTANCE_PATH": str(tmp_path),
    }
    flask = Path(sys.executable).parent / "flask"
    return subprocess.run([str(flask), "--app", "wsgi", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_startup_refuses_rows_under_an_unconfigured_key_but_dbcrypt_still_runs(app, use_keys, tmp_path):
    seed_secrets(app, FIXED + 3)
    use_keys(KEY_B)  # key A lost
    with app.app_context(), pytest.raises(StartupCheckError, match=f"not configured .*{DIGEST_A}"):
        check_keys_against_database()

    served = flask_cli("users", "deactivate", "nobody@example.com", keys=KEY_B, tmp_path=tmp_path)
    assert served.returncode == 1
    assert "Switchboard cannot start" in served.stderr and DIGEST_A in served.stderr

    status = flask_cli("dbcrypt", "status", keys=KEY_B, tmp_path=tmp_path)
    assert status.returncode == 0, status.stderr
    line_a = next(line for line in status.stdout.splitlines() if line.strip().startswith(DIGEST_A))
    assert "NOT CONFIGURED" in line_a and line_a.split()[-1] == str(FIXED + 3)

    verify = flask_cli("dbcrypt", "verify", keys=KEY_B, tmp_path=tmp_path)
    assert verify.returncode == 1
    assert verify.stdout.splitlines()[-1] == f"0 ok, {FIXED + 3} unreadable"
    assert_no_plaintext(verify.stdout + verify.stderr)


@pytest.mark.postgres_only
@pytest.mark.slow
def test_rotation_while_the_app_keeps_writing_and_reading(app, use_keys):
    """ROTATION_SOAK_SECONDS (default 20, as the issue asks) of 4 threads creating, replacing and reading keys."""
    assert is_postgres()
    soak = float(os.environ.get("ROTATION_SOAK_SECONDS", "20"))
    written = {row_id: {plaintext} for (_table, row_id), plaintext in seed_secrets(app, 3000).items()}
    with app.app_context():
        provider_ids = list(db.session.execute(sa.select(AIProvider.id)).scalars())
        ids = {model: list(db.session.execute(sa.select(model.id)).scalars())
               for model in (AIProviderKey, UserAIProviderKey)}
    use_keys(KEY_B, KEY_A)
    guard = threading.Lock()
    errors: list[str] = []
    done = {"create": 0, "replace": 0, "read": 0}
    stop = threading.Event()

    def one_operation(rnd: random.Random) -> str:
        model = rnd.choice([AIProviderKey, UserAIProviderKey])
        op = rnd.choice(["create", "replace", "read", "read"]) if model is AIProviderKey else rnd.choice(["replace", "read"])
        plaintext = new_key("soak")
        with app.app_context():
            if op == "create":
                row = AIProviderKey(id=uuid.uuid4(), provider_id=rnd.choice(provider_ids), fingerprint=uuid.uuid4().hex)
                with guard:
                    written[row.id] = {plaintext}
                seal(row, plaintext)
                assert row.key_digest == DIGEST_B
                db.session.add(row)
                db.session.commit()
                with guard:
                    ids[AIProviderKey].append(row.id)
                return op
            with guard:
                row_id = rnd.choice(ids[model])
            row = db.session.get(model, row_id)
            if op == "replace":
                with guard:
                    written[row_id].add(plaintext)
                seal(row, plaintext)
                db.session.commit()
            elif open_secret(row) not in written[row_id]:
                raise AssertionError(f"{model.__tablename__} {row_id} decrypted to a value never written")
        return op

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            try:
                op = one_operation(rnd)
            except DecryptionError as error:
                errors.append(f"decryption error: {error}")
            except Exception as error:  # any failure of the app's own writes counts
                errors.append(repr(error))
            else:
                with guard:
                    done[op] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(min(1.0, soak / 4))
        with app.app_context():
            result = keymanagement.rotate(batch_size=25)
        time.sleep(max(0.0, soak - (time.monotonic() - started)))
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert errors == []
    assert result.failed == 0
    assert min(done.values()) > 0, done
    state = key_status(app)
    assert state.rows_under(DIGEST_A) == 0
    assert revoked_at(app, DIGEST_A) is not None
    with app.app_context():
        verified = keymanagement.verify()
    assert (verified.ok, verified.unreadable) == (state.total_rows, 0)
    assert verified.ok >= 3000 + done["create"]
