"""`ai-providers migrate-legacy`: legacy chat providers become AI providers with the same id, and
nobody notices (the enabled set and every user's resolution are the same before and after).

The seeded AWS Bedrock provider has its central credential on and no stored key: legacy
resolution serves it with the chat backend's AWS credentials, but an AI provider needs a stored
key (SPEC section 6), so the migration refuses it and it stays legacy, working as before."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from tests.support import is_postgres, new_key


@dataclass
class Seeded:
    providers: dict[str, uuid.UUID] = field(default_factory=dict)  # type -> legacy id
    central: dict[str, str] = field(default_factory=dict)  # type -> central key
    user_keys: dict[tuple[uuid.UUID, str], str] = field(default_factory=dict)  # (user id, type) -> key
    configs: dict[str, uuid.UUID] = field(default_factory=dict)  # label -> config id
    users: list = field(default_factory=list)


# type: (flags, has central key, expected key policy)
LEGACY = {
    "openai": ({"central_api_key_enabled": True}, True, "provider_only"),
    "anthropic": ({"allow_user_api_key": True, "allow_central_api_key_fallback": True}, True, "user_preferred"),
    "google": ({"central_api_key_enabled": False, "allow_user_api_key": True}, False, "user_only"),
    "openrouter": ({"allow_user_api_key": True}, True, "user_only"),
    "azure": ({"display_name": "Azure (EU)", "enabled": False, "base_url": "https://eu.example.com/openai/"},
              True, "provider_only"),
    "bedrock": ({}, False, "provider_only"),
}
KEYLESS = "bedrock"  # central credential on, no stored key: refused, stays legacy
MIGRATABLE = sorted(set(LEGACY) - {KEYLESS})
KEYLESS_REASON = ("it relies on the AWS credentials of the chat backend instead of a stored key; AI providers "
                  "need a stored key: add one to the legacy provider first, or keep it as legacy")
# config label: (type, model, extra columns)
CONFIGS = {
    "gpt": ("openai", "gpt-4o", {"is_default": True}),
    "gpt-off": ("openai", "gpt-3.5", {"enabled": False}),
    "claude": ("anthropic", "claude-sonnet", {}),
    "gemini": ("google", "gemini-pro", {}),
    "router": ("openrouter", "mixtral", {}),
    "azure": ("azure", "gpt-4-eu", {}),
    "titan": ("bedrock", "titan", {}),
    "no-provider": ("vercel", "v0", {}),  # no legacy provider of its type: stays legacy
}


def seed(app, admin, member, member_b) -> Seeded:
    """Legacy providers (with and without keys), users' keys and legacy configs (one the
    default), plus one soft-deleted legacy config and an unrelated AI provider with its config."""
    from app.db import utcnow
    from app.extensions import db
    from app.models import ChatModelConfig
    from app.services import legacy, provider_keys
    from app.services import providers as ai
    from app.services.base import Actor

    seeded = Seeded(users=[admin, member, member_b])
    with app.app_context():
        actor = Actor.system("test")
        for provider_type, (flags, with_key, _) in LEGACY.items():
            key = new_key(f"central-{provider_type}") if with_key else None
            row = legacy.create_provider(actor, provider=provider_type, api_key=key, **flags)
            seeded.providers[provider_type] = row.id
            if key:
                seeded.central[provider_type] = key
        for user in (member, member_b):
            for provider_type in ("anthropic", "google", "openrouter"):
                if (user is member_b) and provider_type == "openrouter":
                    continue  # member_b relies on nothing for openrouter: user_api_key_required
                key = new_key(f"user-{provider_type}")
                legacy.set_user_key(Actor.for_user(user), seeded.providers[provider_type], key)
                seeded.user_keys[(user.id, provider_type)] = key
        for label, (provider_type, model, extra) in CONFIGS.items():
            config = ChatModelConfig(id=uuid.uuid4(), provider=provider_type, model=model, display_name=label, **extra)
            db.session.add(config)
            seeded.configs[label] = config.id
        gone = ChatModelConfig(id=uuid.uuid4(), provider="openai", model="gpt-old", deleted=True,
                               deleted_at=utcnow())
        db.session.add(gone)
        seeded.configs["deleted"] = gone.id
        db.session.commit()
        other = ai.create_provider(actor, type="openai", name="openai-direct")
        provider_keys.add_key(actor, other.id, new_key("direct"))
        db.session.add(ChatModelConfig(id=uuid.uuid4(), ai_provider_id=other.id, provider="openai", model="o1"))
        db.session.commit()
        db.session.remove()
    return seeded


def observe(app, seeded: Seeded, byok: bool = True) -> dict:
    """What users notice: the enabled set, and for each user and live config the resolution,
    with the plaintext of the key that would be handed out."""
    from app.extensions import db
    from app.models import ChatModelConfig, ChatProvider, User
    from app.services import model_configs, resolution, secrets

    app.config["ALLOW_BYOK"] = byok
    try:
        with app.app_context():
            enabled = [c.id for c in model_configs.list_enabled(None)[0]]
            live = db.session.execute(
                sa.select(ChatModelConfig.id).where(ChatModelConfig.deleted.is_(False)).order_by(ChatModelConfig.id)
            ).scalars().all()
            seen = {"enabled": enabled, "default": [c for c in live if db.session.get(ChatModelConfig, c).is_default]}
            for user in seeded.users:
                user_row = db.session.get(User, user.id)
                for config_id in live:
                    r = resolution.resolve(user_row, config_id)
                    keyless = isinstance(r.key_row, ChatProvider) and r.key_row.api_key_ciphertext is None
                    key = secrets.open_secret(r.key_row) if r.available and not keyless else None
                    seen[(user.email, config_id)] = (
                        r.provider.id if r.provider else None, r.provider.enabled if r.provider else None,
                        r.base_url, r.key_source, r.available, r.reason, key,
                    )
            db.session.remove()
            return seen
    finally:
        app.config["ALLOW_BYOK"] = True


def snapshot(app) -> dict:
    """Every row of every table a migration could touch, to prove that nothing changed."""
    from app.extensions import db

    tables = ("ai_providers", "ai_provider_keys", "user_ai_provider_keys", "chat_model_configs", "chat_providers",
              "user_chat_provider_keys", "audit_events", "encryption_keys")
    with app.app_context():
        out = {}
        for table in tables:
            rows = db.session.execute(sa.text(f'SELECT * FROM "{table}"')).all()
            out[table] = sorted(repr(tuple(r)) for r in rows)
        db.session.remove()
        return out


def migrate(app, **kw):
    from app.services.base import Actor
    from app.services.legacy_migration import migrate_legacy

    with app.app_context():
        summary = migrate_legacy(Actor.system("test"), **kw)
        from app.extensions import db

        db.session.remove()
        return summary


def rows(app, model, *where):
    from app.extensions import db

    with app.app_context():
        found = db.session.execute(sa.select(model).where(*where)).scalars().all()
        db.session.expunge_all()
        return found


@pytest.fixture
def seeded(app, admin, member, member_b):
    return seed(app, admin, member, member_b)


# --- the migration -----------------------------------------------------------------------------


def test_migration_copies_everything_and_users_notice_nothing(app, seeded, admin_api):
    before = observe(app, seeded)
    before_without_byok = observe(app, seeded, byok=False)

    summary = migrate(app)

    assert [o.provider for o in summary.migrated] == MIGRATABLE
    assert (summary.provider_keys, summary.user_keys, summary.model_configs) == (4, 5, 7)
    assert not summary.skipped
    assert [(o.provider, o.reason) for o in summary.failed] == [(KEYLESS, KEYLESS_REASON)]
    assert observe(app, seeded) == before
    assert observe(app, seeded, byok=False) == before_without_byok

    from app.models import AIProvider, AIProviderKey, ChatModelConfig, UserAIProviderKey
    from app.services import secrets

    by_id = {p.id: p for p in rows(app, AIProvider)}
    assert seeded.providers[KEYLESS] not in by_id
    for provider_type in MIGRATABLE:
        flags, _, policy = LEGACY[provider_type]
        provider = by_id[seeded.providers[provider_type]]
        assert provider.name == f"agents-{provider_type}"
        assert provider.type == provider_type
        assert provider.key_policy == policy
        assert provider.enabled is flags.get("enabled", True)
        assert not provider.deleted
    assert by_id[seeded.providers["azure"]].display_name == "Azure (EU)"
    assert by_id[seeded.providers["azure"]].base_url == "https://eu.example.com/openai"
    assert by_id[seeded.providers["openai"]].display_name == "OpenAI"

    with app.app_context():
        for provider_type, key in seeded.central.items():
            (row,) = rows(app, AIProviderKey, AIProviderKey.provider_id == seeded.providers[provider_type])
            assert secrets.open_secret(row) == key
            assert row.fingerprint == secrets.fingerprint(f"ai_provider:{row.provider_id}", key)
            assert row.hint == "..." + key[-4:]
        for (user_id, provider_type), key in seeded.user_keys.items():
            (row,) = rows(app, UserAIProviderKey, UserAIProviderKey.user_id == user_id,
                          UserAIProviderKey.ai_provider_id == seeded.providers[provider_type])
            assert secrets.open_secret(row) == key

    configs = {c.id: c for c in rows(app, ChatModelConfig)}
    for label, (provider_type, _, _) in CONFIGS.items():
        expected = None if provider_type in ("vercel", KEYLESS) else seeded.providers[provider_type]
        assert configs[seeded.configs[label]].ai_provider_id == expected, label
    assert configs[seeded.configs["deleted"]].ai_provider_id == seeded.providers["openai"]
    assert configs[seeded.configs["gpt"]].is_default

    # The copied key is the provider's own: adding it again is a duplicate.
    duplicate = admin_api.post(f"/ai-providers/{seeded.providers['openai']}/keys",
                               json={"api_key": seeded.central["openai"]})
    assert duplicate.status_code == 409
    listed = admin_api.get("/ai-providers")
    assert {p["name"] for p in listed.get_json()} == {"openai-direct", *(f"agents-{t}" for t in MIGRATABLE)}


def test_the_same_ciphertext_is_not_reused(app, seeded):
    """Re-encrypted for the new rows: the old ciphertext would not decrypt there."""
    from app.models import AIProviderKey, ChatProvider

    migrate(app)
    legacy_row = rows(app, ChatProvider, ChatProvider.provider == "openai")[0]
    (new_row,) = rows(app, AIProviderKey, AIProviderKey.provider_id == legacy_row.id)
    assert new_row.ciphertext != legacy_row.api_key_ciphertext


def test_a_second_run_has_nothing_to_do_and_changes_nothing(app, seeded):
    migrate(app)
    after_first = snapshot(app)
    summary = migrate(app)
    assert {o.provider: o.status for o in summary.outcomes} == {**dict.fromkeys(MIGRATABLE, "skipped"),
                                                                KEYLESS: "failed"}
    assert {o.reason for o in summary.skipped} == {"already migrated"}
    assert summary.headline() == "Nothing migrated: 1 provider cannot be migrated, 5 already migrated."
    assert snapshot(app) == after_first


def test_dry_run_reports_and_writes_nothing(app, seeded):
    before = snapshot(app)
    summary = migrate(app, dry_run=True)
    assert summary.dry_run
    assert [o.provider for o in summary.migrated] == MIGRATABLE
    assert [(o.provider, o.reason) for o in summary.failed] == [(KEYLESS, KEYLESS_REASON)]
    assert (summary.provider_keys, summary.user_keys, summary.model_configs) == (4, 5, 7)
    assert summary.headline() == ("Would migrate 5 legacy providers: would copy 4 provider keys, 5 user keys, "
                                  "7 model configs. 1 provider failed.")
    assert snapshot(app) == before
    assert migrate(app).provider_keys == 4  # and the real run still has everything to do


def test_the_keyless_bedrock_provider_stays_legacy_and_keeps_working(app, seeded, admin_api):
    """Refused: its users keep the model (served by the chat backend's AWS credentials), its
    legacy row and configs are untouched, and it is still listed as a legacy provider."""
    from app.models import ChatModelConfig, ChatProvider

    legacy_before = [repr(tuple(getattr(p, c.key) for c in ChatProvider.__table__.columns))
                     for p in rows(app, ChatProvider, ChatProvider.provider == KEYLESS)]
    before = observe(app, seeded)
    titan = seeded.configs["titan"]
    assert all(seen[3:5] == ("provider", True) for name, seen in before.items()
               if isinstance(name, tuple) and name[1] == titan)

    migrate(app)

    assert observe(app, seeded) == before
    assert [repr(tuple(getattr(p, c.key) for c in ChatProvider.__table__.columns))
            for p in rows(app, ChatProvider, ChatProvider.provider == KEYLESS)] == legacy_before
    (config,) = rows(app, ChatModelConfig, ChatModelConfig.id == titan)
    assert config.ai_provider_id is None
    assert admin_api.get(f"/ai-providers/{seeded.providers[KEYLESS]}").status_code == 404
    assert str(seeded.providers[KEYLESS]) in {p["id"] for p in admin_api.get("/providers").get_json()}


def test_bedrock_migrates_once_its_legacy_provider_has_a_key(app, seeded):
    from app.models import AIProviderKey
    from app.services import legacy, secrets
    from app.services.base import Actor

    key = new_key("bedrock")
    with app.app_context():
        legacy.update_provider(Actor.system("test"), seeded.providers[KEYLESS], {"api_key": key})
    before = observe(app, seeded)
    before_without_byok = observe(app, seeded, byok=False)

    summary = migrate(app)

    assert not summary.failed
    assert [o.provider for o in summary.migrated] == sorted(LEGACY)
    (outcome,) = [o for o in summary.migrated if o.provider == KEYLESS]
    assert (outcome.key_policy, outcome.provider_keys, outcome.model_configs) == ("provider_only", 1, 1)
    assert observe(app, seeded) == before
    assert observe(app, seeded, byok=False) == before_without_byok
    with app.app_context():
        (row,) = rows(app, AIProviderKey, AIProviderKey.provider_id == seeded.providers[KEYLESS])
        assert secrets.open_secret(row) == key


@pytest.mark.parametrize(("flags", "refused"), [
    ({"central_api_key_enabled": True}, True),  # provider_only: everyone is served by AWS credentials
    ({"allow_user_api_key": True, "allow_central_api_key_fallback": True}, True),  # user_preferred: the fallback
    ({"allow_user_api_key": True}, False),  # central + user keys without fallback: user_only, central unused
    ({"central_api_key_enabled": False, "allow_user_api_key": True}, False),  # user keys only
])
def test_a_keyless_bedrock_provider_is_refused_only_when_its_credential_serves_someone(
        app, member, member_b, flags, refused):
    """member has a key of their own, member_b does not; either way nobody notices the migration."""
    from app.extensions import db
    from app.models import ChatModelConfig
    from app.services import legacy
    from app.services.base import Actor

    seeded = Seeded(users=[member, member_b])
    with app.app_context():
        row = legacy.create_provider(Actor.system("test"), provider="bedrock", **flags)
        seeded.providers["bedrock"] = row.id
        if flags.get("allow_user_api_key"):
            legacy.set_user_key(Actor.for_user(member), row.id, new_key("user-bedrock"))
        config = ChatModelConfig(id=uuid.uuid4(), provider="bedrock", model="titan")
        db.session.add(config)
        db.session.commit()
        seeded.configs["titan"] = config.id
        db.session.remove()
    before = observe(app, seeded)

    summary = migrate(app)

    assert [o.status for o in summary.outcomes] == ["failed" if refused else "migrated"]
    assert observe(app, seeded) == before


def test_a_failure_part_way_leaves_each_provider_migrated_or_untouched(app, seeded, monkeypatch):
    from app.models import AIProvider, AIProviderKey, ChatModelConfig
    from app.services import legacy_migration, secrets

    before = observe(app, seeded)
    second = seeded.providers["azure"]  # providers run in type order: anthropic, azure, ...
    real_seal = secrets.seal

    def failing_seal(row, plaintext):
        if isinstance(row, AIProviderKey) and row.provider_id == second:
            raise RuntimeError("disk full")
        real_seal(row, plaintext)

    monkeypatch.setattr(secrets, "seal", failing_seal)
    with pytest.raises(legacy_migration.MigrationStopped) as stopped:
        migrate(app)
    assert stopped.value.provider == "azure"
    assert [o.provider for o in stopped.value.summary.migrated] == ["anthropic"]
    monkeypatch.setattr(secrets, "seal", real_seal)

    assert [p.id for p in rows(app, AIProvider, AIProvider.name.startswith("agents-"))] == [seeded.providers["anthropic"]]
    configs = {c.id: c.ai_provider_id for c in rows(app, ChatModelConfig)}
    assert configs[seeded.configs["claude"]] == seeded.providers["anthropic"]
    assert configs[seeded.configs["azure"]] is None
    assert rows(app, AIProviderKey, AIProviderKey.provider_id == second) == []
    assert observe(app, seeded) == before  # half-way (Bedrock not reached), users still notice nothing

    summary = migrate(app)
    assert [(o.provider, o.status) for o in summary.outcomes][:2] == [("anthropic", "skipped"), ("azure", "migrated")]
    assert len(summary.migrated) == len(MIGRATABLE) - 1
    assert observe(app, seeded) == before


def test_known_problems_fail_one_provider_and_the_others_go_on(app, seeded, runner):
    """A taken agents- name and an unreadable key fail their provider only; the CLI exits 1."""
    from app.extensions import db
    from app.models import AIProvider, ChatProvider, UserChatProviderKey

    with app.app_context():
        db.session.add(AIProvider(id=uuid.uuid4(), type="openai", name="agents-openai"))
        user_key = db.session.execute(sa.select(UserChatProviderKey).where(
            UserChatProviderKey.chat_provider_id == seeded.providers["google"])).scalars().first()
        user_key.ciphertext = bytes(reversed(user_key.ciphertext))  # tampered
        db.session.commit()
        db.session.remove()

    result = runner.invoke(args=["ai-providers", "migrate-legacy"])
    assert result.exit_code == 1
    assert "openai: failed, the name agents-openai is taken by another AI provider" in result.output
    assert "google: failed, a user's API key cannot be decrypted with the configured keys" in result.output
    assert f"bedrock: failed, {KEYLESS_REASON}" in result.output
    assert "Migrated 3 legacy providers" in result.output
    migrated = {p.id for p in rows(app, AIProvider, AIProvider.name.startswith("agents-"))}
    assert seeded.providers["google"] not in migrated and seeded.providers["openai"] not in migrated
    assert seeded.providers["anthropic"] in migrated
    assert len(rows(app, ChatProvider)) == len(LEGACY)  # the legacy rows stay


@pytest.mark.parametrize("creator", ["same_transaction", pytest.param("other_connection", marks=pytest.mark.postgres_only)])
def test_a_name_taken_after_the_check_fails_that_provider_only(app, seeded, creator):
    """The `agents-<type>` check takes no lock: an AI provider of that name created between the
    check and the insert hits the unique index. That fails this provider (as a taken name found
    by the check does) and the others go on, instead of stopping the run.

    The creation is injected at the moment the migration flushes its new provider: through the
    migration's own connection (both databases; SQLite serialises writers, so this is the only
    way to get there), or on PostgreSQL committed by another connection, as a concurrent admin
    request would."""
    from sqlalchemy.orm import Session

    from app.extensions import db
    from app.models import AIProvider, ChatModelConfig

    injected: list[uuid.UUID] = []

    def take_the_name(session, _context, _instances) -> None:
        if injected or not any(isinstance(o, AIProvider) and o.name == "agents-openai" for o in session.new):
            return
        injected.append(uuid.uuid4())
        row = {"id": injected[0], "type": "openai", "name": "agents-openai"}
        if creator == "same_transaction":
            session.connection().execute(sa.insert(AIProvider.__table__).values(**row))
        else:
            with db.engine.begin() as other:
                other.execute(sa.insert(AIProvider.__table__).values(**row))

    sa.event.listen(Session, "before_flush", take_the_name)
    try:
        summary = migrate(app)
    finally:
        sa.event.remove(Session, "before_flush", take_the_name)

    assert injected, "the migration never flushed agents-openai"
    assert [(o.provider, o.reason) for o in summary.failed] == [
        (KEYLESS, KEYLESS_REASON), ("openai", "the name agents-openai is taken by another AI provider")]
    assert sorted(o.provider for o in summary.migrated) == sorted(set(MIGRATABLE) - {"openai"})
    migrated = {p.id for p in rows(app, AIProvider, AIProvider.name.startswith("agents-"))}
    assert seeded.providers["openai"] not in migrated
    assert seeded.providers["anthropic"] in migrated
    configs = {c.id: c.ai_provider_id for c in rows(app, ChatModelConfig)}
    assert configs[seeded.configs["gpt"]] is None  # openai's configs stay legacy, untouched
    others = rows(app, AIProvider, AIProvider.name == "agents-openai")
    assert [p.id for p in others] == ([injected[0]] if creator == "other_connection" else [])


def test_migration_is_audited_without_keys(app, seeded):
    from app.models import AuditEvent

    migrate(app)
    events = rows(app, AuditEvent, AuditEvent.action == "legacy_provider.migrate")
    assert {e.resource_id for e in events} == {str(seeded.providers[t]) for t in MIGRATABLE}
    openai = next(e for e in events if e.details["type"] == "openai")
    assert openai.details["copied_provider_key_count"] == 1
    assert openai.details["moved_model_config_count"] == 3
    dumped = repr([e.details for e in rows(app, AuditEvent)])
    for key in [*seeded.central.values(), *seeded.user_keys.values()]:
        assert key not in dumped


def test_nothing_to_migrate_without_legacy_providers(app):
    summary = migrate(app)
    assert summary.nothing_to_do
    assert summary.headline() == "Nothing to migrate: there are no legacy chat providers."


# --- the command -------------------------------------------------------------------------------


def test_cli_migrates_with_a_progress_bar_and_a_summary(app, seeded, runner):
    result = runner.invoke(args=["ai-providers", "migrate-legacy"])
    assert result.exit_code == 1, result.output  # the keyless Bedrock provider failed
    out = result.output
    assert "Migrating legacy providers" in out
    assert ("Migrated 5 legacy providers: copied 4 provider keys, 5 user keys, 7 model configs. "
            "1 provider failed.") in out
    assert "anthropic: migrated to agents-anthropic (user_preferred), 1 provider key, 2 user keys, 1 model config" in out
    assert f"bedrock: failed, {KEYLESS_REASON}" in out
    for key in [*seeded.central.values(), *seeded.user_keys.values()]:
        assert key not in out

    again = runner.invoke(args=["ai-providers", "migrate-legacy"])
    assert again.exit_code == 1
    assert "Nothing migrated: 1 provider cannot be migrated, 5 already migrated." in again.output
    assert "openai: skipped, already migrated" in again.output
    assert f"bedrock: failed, {KEYLESS_REASON}" in again.output


def test_cli_dry_run_writes_nothing(app, seeded, runner):
    before = snapshot(app)
    result = runner.invoke(args=["ai-providers", "migrate-legacy", "--dry-run"])
    assert result.exit_code == 1, result.output  # Bedrock would fail
    assert "Would migrate 5 legacy providers: would copy 4 provider keys, 5 user keys, 7 model configs." in result.output
    assert f"bedrock: failed, {KEYLESS_REASON}" in result.output
    assert "openai: would migrate to agents-openai (provider_only)" in result.output
    assert "Dry run: nothing was written." in result.output
    assert snapshot(app) == before


def test_cli_reports_a_stop_and_exits_non_zero(app, seeded, runner, monkeypatch):
    from app.services import legacy_migration

    real = legacy_migration._migrate_one

    def flaky(actor, legacy_id, dry_run):
        if legacy_id == seeded.providers["bedrock"]:
            raise sa.exc.OperationalError("UPDATE", {}, Exception("connection lost"))
        return real(actor, legacy_id, dry_run)

    monkeypatch.setattr(legacy_migration, "_migrate_one", flaky)
    result = runner.invoke(args=["ai-providers", "migrate-legacy"])
    assert result.exit_code == 1
    assert "Migrated 2 legacy providers" in result.output
    assert "Stopped at legacy provider bedrock" in result.output
    assert "connection lost" not in result.output


@pytest.mark.postgres_only
@pytest.mark.slow
def test_concurrent_runs_migrate_each_provider_once(app, seeded):
    assert is_postgres()
    results, errors = [], []

    def run():
        try:
            results.append(migrate(app))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(s.migrated) for s in results) == len(MIGRATABLE)
    assert sum(s.user_keys for s in results) == 5
