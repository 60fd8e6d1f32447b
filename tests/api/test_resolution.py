"""Key resolution (SPEC section 6): which provider and whose key serve a user with a config.

Checked through GET /model-configs/{id}/resolution (what a signed-in user sees) and, where the
chosen key matters, through the service that hands it out.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support import new_key


def make_provider(app, name="prov", type="openai", key_policy="provider_only", keys=(), base_url=""):
    from app.services import provider_keys, providers
    from app.services.base import Actor

    with app.app_context():
        actor = Actor.system("test")
        provider = providers.create_provider(actor, type=type, name=name, key_policy=key_policy, base_url=base_url)
        for key in keys:
            provider_keys.add_key(actor, provider.id, key)
        return provider.id


def make_config(app, provider_id=None, model="m", provider=None, **fields):
    from app.services import model_configs
    from app.services.base import Actor

    with app.app_context():
        config = model_configs.create_config(Actor.system("test"), ai_provider_id=provider_id, provider=provider,
                                             model=model, **fields)
        return config.id


def give_user_key(app, user, provider_id, key):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services import secrets

    with app.app_context():
        row = UserAIProviderKey(id=uuid.uuid4(), user_id=user.id, ai_provider_id=provider_id)
        secrets.seal(row, key)
        db.session.add(row)
        db.session.commit()


def make_legacy(app, provider="anthropic", *, central=True, user=False, fallback=False, api_key=None, enabled=True,
                base_url=""):
    from app.extensions import db
    from app.models import ChatProvider
    from app.services import secrets

    with app.app_context():
        row = ChatProvider(id=uuid.uuid4(), provider=provider, display_name="Legacy " + provider, enabled=enabled,
                           base_url=base_url, central_api_key_enabled=central, allow_user_api_key=user,
                           allow_central_api_key_fallback=fallback)
        if api_key:
            secrets.seal(row, api_key)
        db.session.add(row)
        db.session.commit()
        return row.id


def give_legacy_user_key(app, user, chat_provider_id, key):
    from app.extensions import db
    from app.models import UserChatProviderKey
    from app.services import secrets

    with app.app_context():
        row = UserChatProviderKey(id=uuid.uuid4(), user_id=user.id, chat_provider_id=chat_provider_id)
        secrets.seal(row, key)
        db.session.add(row)
        db.session.commit()


def hand_out(app, user, config_id):
    from app.services.base import Actor
    from app.services.resolution import hand_out_credentials

    with app.app_context():
        resolution, key, _ = hand_out_credentials(Actor(is_service=True, label="test service"), (user.id, config_id))
        return resolution, key


def resolution_of(api, config_id):
    response = api.get(f"/model-configs/{config_id}/resolution")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- the table: key_policy x user key x provider key x BYOK -----------------------------------

TABLE = [
    # policy,          user key, provider key, BYOK,  key_source, reason
    ("provider_only",  True,  True,  True,  "provider", None),
    ("provider_only",  True,  False, True,  None, "missing_api_key"),
    ("provider_only",  False, True,  True,  "provider", None),
    ("provider_only",  False, False, True,  None, "missing_api_key"),
    ("provider_only",  True,  True,  False, "provider", None),
    ("provider_only",  True,  False, False, None, "missing_api_key"),
    ("provider_only",  False, True,  False, "provider", None),
    ("provider_only",  False, False, False, None, "missing_api_key"),
    ("user_preferred", True,  True,  True,  "user", None),
    ("user_preferred", True,  False, True,  "user", None),
    ("user_preferred", False, True,  True,  "provider", None),
    ("user_preferred", False, False, True,  None, "user_api_key_required"),
    ("user_preferred", True,  True,  False, "provider", None),
    ("user_preferred", True,  False, False, None, "missing_api_key"),
    ("user_preferred", False, True,  False, "provider", None),
    ("user_preferred", False, False, False, None, "missing_api_key"),
    ("user_only",      True,  True,  True,  "user", None),
    ("user_only",      True,  False, True,  "user", None),
    ("user_only",      False, True,  True,  None, "user_api_key_required"),
    ("user_only",      False, False, True,  None, "user_api_key_required"),
    ("user_only",      True,  True,  False, None, "byok_disabled"),
    ("user_only",      True,  False, False, None, "byok_disabled"),
    ("user_only",      False, True,  False, None, "byok_disabled"),
    ("user_only",      False, False, False, None, "byok_disabled"),
]


@pytest.mark.parametrize(("policy", "has_user_key", "has_provider_key", "byok", "key_source", "reason"), TABLE)
def test_resolution_table(app, member, member_api, policy, has_user_key, has_provider_key, byok, key_source, reason):
    provider_key, user_key = new_key("provider"), new_key("user")
    pid = make_provider(app, key_policy=policy, keys=[provider_key] if has_provider_key else [],
                        base_url="https://llm.example.com/v1")
    cid = make_config(app, pid)
    if has_user_key:
        give_user_key(app, member, pid, user_key)
    app.config["ALLOW_BYOK"] = byok

    response = member_api.get(f"/model-configs/{cid}/resolution")
    assert response.status_code == 200
    assert provider_key not in response.get_data(as_text=True)
    assert user_key not in response.get_data(as_text=True)
    assert response.get_json() == {
        "model_config_id": str(cid),
        "provider": {"id": str(pid), "type": "openai", "name": "prov", "display_name": "prov", "enabled": True},
        "base_url": "https://llm.example.com/v1",
        "key_source": key_source,
        "available": key_source is not None,
        "reason": reason,
    }
    resolution, key = hand_out(app, member, cid)
    assert (resolution.key_source, resolution.reason) == (key_source, reason)
    assert key == {"user": user_key, "provider": provider_key, None: None}[key_source]


def test_the_providers_oldest_key_serves(app, member):
    first, second = new_key("first"), new_key("second")
    pid = make_provider(app, keys=[first, second])
    cid = make_config(app, pid)
    assert hand_out(app, member, cid)[1] == first
    from app.services import provider_keys
    from app.services.base import Actor

    with app.app_context():
        oldest = provider_keys.list_keys(pid)[0]
        provider_keys.delete_key(Actor.system("test"), pid, oldest.id)
    assert hand_out(app, member, cid)[1] == second


def test_resolution_is_for_the_caller(app, member, member_api, member_b_api):
    pid = make_provider(app, key_policy="user_only")
    cid = make_config(app, pid)
    give_user_key(app, member, pid, new_key("mine"))
    assert resolution_of(member_api, cid)["key_source"] == "user"
    other = resolution_of(member_b_api, cid)
    assert (other["key_source"], other["available"], other["reason"]) == (None, False, "user_api_key_required")


# --- disabled and deleted ----------------------------------------------------------------------


def test_disabled_config_is_model_disabled(app, member_api):
    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid, enabled=False)
    body = resolution_of(member_api, cid)
    assert (body["available"], body["key_source"], body["reason"]) == (False, None, "model_disabled")


def test_disabled_provider_is_provider_disabled(app, member_api):
    from app.services import providers
    from app.services.base import Actor

    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    with app.app_context():
        providers.update_provider(Actor.system("test"), pid, {"enabled": False})
    body = resolution_of(member_api, cid)
    assert (body["available"], body["key_source"], body["reason"]) == (False, None, "provider_disabled")
    assert body["provider"]["enabled"] is False


def test_a_disabled_config_on_a_disabled_provider_is_model_disabled(app, member_api):
    from app.services import providers
    from app.services.base import Actor

    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid, enabled=False)
    with app.app_context():
        providers.update_provider(Actor.system("test"), pid, {"enabled": False})
    assert resolution_of(member_api, cid)["reason"] == "model_disabled"


def test_a_live_config_on_a_deleted_provider_is_provider_disabled(app, member_api):
    """Provider deletion takes its configs along; should a row ever be left, it is not served."""
    from app.db import utcnow
    from app.extensions import db
    from app.models import AIProvider

    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    with app.app_context():
        provider = db.session.get(AIProvider, pid)
        provider.deleted, provider.deleted_at = True, utcnow()
        db.session.commit()
    body = resolution_of(member_api, cid)
    assert (body["provider"], body["base_url"], body["available"], body["reason"]) == (
        None, None, False, "provider_disabled")


def test_deleted_or_unknown_config_is_404(app, member_api, admin_api):
    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    admin_api.delete(f"/model-configs/{cid}")
    for path in (f"/model-configs/{cid}/resolution", f"/model-configs/{uuid.uuid4()}/resolution"):
        response = member_api.get(path)
        assert response.status_code == 404
        assert response.get_json() == {"message": "Chat model config not found."}
    assert member_api.get("/model-configs/x/resolution").status_code == 400


def test_provider_deletion_ends_resolution(app, member_api):
    from app.services import providers
    from app.services.base import Actor

    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    assert resolution_of(member_api, cid)["available"] is True
    with app.app_context():
        providers.delete_provider(Actor.system("test"), pid)
    assert member_api.get(f"/model-configs/{cid}/resolution").status_code == 404


def test_service_tokens_cannot_ask_for_a_resolution(app, service_api):
    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    assert service_api.get(f"/model-configs/{cid}/resolution").status_code == 403


# --- legacy configs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("central", "user", "fallback", "policy"), [
    (True, False, False, "provider_only"),
    (False, True, False, "user_only"),
    (True, True, True, "user_preferred"),
    (True, True, False, "user_only"),
])
def test_legacy_key_policy_mapping(app, central, user, fallback, policy):
    from app.models import ChatProvider
    from app.services.resolution import legacy_key_policy

    row = ChatProvider(provider="openai", central_api_key_enabled=central, allow_user_api_key=user,
                       allow_central_api_key_fallback=fallback)
    assert legacy_key_policy(row) == policy


LEGACY_TABLE = [
    # central, user, fallback, central key, user key, BYOK, key_source, reason
    (True, False, False, True, False, True, "provider", None),
    (True, False, False, False, False, True, None, "missing_api_key"),
    (True, False, False, True, True, True, "provider", None),
    (True, False, False, True, False, False, "provider", None),
    (False, True, False, False, True, True, "user", None),
    (False, True, False, False, False, True, None, "user_api_key_required"),
    (False, True, False, False, True, False, None, "byok_disabled"),
    (True, True, True, True, True, True, "user", None),
    (True, True, True, True, False, True, "provider", None),
    (True, True, True, False, False, True, None, "user_api_key_required"),
    (True, True, True, True, True, False, "provider", None),
    (True, True, True, False, True, False, None, "missing_api_key"),
    (True, True, False, True, False, True, None, "user_api_key_required"),  # the central key is not used
    (True, True, False, True, True, True, "user", None),
    (True, True, False, True, True, False, None, "byok_disabled"),
]


@pytest.mark.parametrize(("central", "user", "fallback", "has_central_key", "has_user_key", "byok", "key_source",
                          "reason"), LEGACY_TABLE)
def test_legacy_resolution_table(app, member, member_api, central, user, fallback, has_central_key, has_user_key,
                                 byok, key_source, reason):
    central_key, user_key = new_key("central"), new_key("legacy-user")
    lpid = make_legacy(app, "anthropic", central=central, user=user, fallback=fallback,
                       api_key=central_key if has_central_key else None, base_url="https://legacy.example.com")
    cid = make_config(app, provider="anthropic", model="claude")
    if has_user_key:
        give_legacy_user_key(app, member, lpid, user_key)
    app.config["ALLOW_BYOK"] = byok

    response = member_api.get(f"/model-configs/{cid}/resolution")
    text = response.get_data(as_text=True)
    assert central_key not in text and user_key not in text
    assert response.get_json() == {
        "model_config_id": str(cid),
        "provider": {"id": str(lpid), "type": "anthropic", "name": "anthropic", "display_name": "Legacy anthropic",
                     "enabled": True},
        "base_url": "https://legacy.example.com",
        "key_source": key_source,
        "available": key_source is not None,
        "reason": reason,
    }
    _, key = hand_out(app, member, cid)
    assert key == {"user": user_key, "provider": central_key, None: None}[key_source]


def test_legacy_disabled_or_missing_provider_is_provider_disabled(app, member_api):
    from app.extensions import db
    from app.models import ChatProvider

    lpid = make_legacy(app, "google", api_key=new_key())
    cid = make_config(app, provider="google", model="gemini")
    with app.app_context():
        db.session.get(ChatProvider, lpid).enabled = False
        db.session.commit()
    body = resolution_of(member_api, cid)
    assert (body["reason"], body["provider"]["enabled"]) == ("provider_disabled", False)
    with app.app_context():
        db.session.delete(db.session.get(ChatProvider, lpid))
        db.session.commit()
    body = resolution_of(member_api, cid)
    assert (body["provider"], body["available"], body["reason"]) == (None, False, "provider_disabled")


def test_a_legacy_row_never_serves_a_config_of_an_ai_provider(app, member_api):
    """An AI-provider config on a disabled provider stays provider_disabled, even with a legacy
    provider of the same type holding a key."""
    from app.services import providers
    from app.services.base import Actor

    make_legacy(app, "openai", api_key=new_key("legacy"))
    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    with app.app_context():
        providers.update_provider(Actor.system("test"), pid, {"enabled": False})
    body = resolution_of(member_api, cid)
    assert (body["provider"]["id"], body["reason"]) == (str(pid), "provider_disabled")


def test_resolve_many_matches_resolve(app, member):
    """The batch form and the single form give the same answers (one code path)."""
    from app.services import model_configs
    from app.services.resolution import resolve, resolve_many

    p1 = make_provider(app, "one", keys=[new_key()])
    p2 = make_provider(app, "two", key_policy="user_only")
    make_legacy(app, "anthropic", central=False, user=True)
    ids = [make_config(app, p1, "a"), make_config(app, p2, "b"), make_config(app, provider="anthropic", model="c"),
           make_config(app, p1, "d", enabled=False)]
    give_user_key(app, member, p2, new_key())
    with app.app_context():
        configs, _ = model_configs.list_configs()
        by_id = {c.id: c for c in configs}
        batch = resolve_many(member, [by_id[i] for i in ids], allowed=set(by_id))
        single = [resolve(member, i) for i in ids]
    assert batch == single
    assert [(r.key_source, r.reason) for r in batch] == [
        ("provider", None), ("user", None), (None, "user_api_key_required"), (None, "model_disabled")]


# --- legacy: one rule with /user-provider-configs ---------------------------------------------


def make_blank_legacy(app, provider, **flags):
    """A legacy provider as `POST /providers` makes it without a display name (or a key)."""
    from app.services import legacy
    from app.services.base import Actor

    with app.app_context():
        return legacy.create_provider(Actor.system("test"), provider=provider, **flags).id


def test_a_legacy_provider_without_display_name_shows_the_type_label(app, member_api):
    """The same name as /providers and /user-provider-configs show ("AWS Bedrock"), not the type."""
    lpid = make_blank_legacy(app, "bedrock")
    cid = make_config(app, provider="bedrock", model="titan")
    body = resolution_of(member_api, cid)
    assert body["provider"] == {"id": str(lpid), "type": "bedrock", "name": "bedrock", "display_name": "AWS Bedrock",
                                "enabled": True}


BEDROCK_TABLE = [
    # central, user, fallback, user key, BYOK, key_source, reason
    (True, False, False, False, True, "provider", None),
    (True, False, False, False, False, "provider", None),
    (True, True, True, False, True, "provider", None),  # the fallback: AWS credentials
    (True, True, True, True, True, "user", None),
    (True, True, True, True, False, "provider", None),
    (True, True, False, False, True, None, "user_api_key_required"),  # the central credential is not used
    (False, True, False, False, True, None, "user_api_key_required"),
    (False, True, False, True, True, "user", None),
]


@pytest.mark.parametrize(("central", "user", "fallback", "has_user_key", "byok", "key_source", "reason"),
                         BEDROCK_TABLE)
def test_a_keyless_legacy_bedrock_provider_is_served_by_its_aws_credentials(
        app, member, member_api, central, user, fallback, has_user_key, byok, key_source, reason):
    """Bedrock needs no stored key: where its central credential is used, the resolution is
    available from the provider and the hand-out carries no key (the chat backend signs with
    its AWS credentials). /user-provider-configs says the same (has_central_api_key_fallback)."""
    user_key = new_key("bedrock-user")
    lpid = make_blank_legacy(app, "bedrock", central_api_key_enabled=central, allow_user_api_key=user,
                             allow_central_api_key_fallback=fallback)
    cid = make_config(app, provider="bedrock", model="titan")
    if has_user_key:
        give_legacy_user_key(app, member, lpid, user_key)
    app.config["ALLOW_BYOK"] = byok

    body = resolution_of(member_api, cid)
    assert (body["key_source"], body["available"], body["reason"]) == (key_source, key_source is not None, reason)
    resolution, key = hand_out(app, member, cid)
    assert (resolution.key_source, key) == (key_source, user_key if key_source == "user" else None)


@pytest.mark.parametrize("provider", ["bedrock", "anthropic"])
@pytest.mark.parametrize("has_central_key", [True, False])
def test_resolution_agrees_with_the_central_key_fallback_users_are_shown(app, member_api, provider, has_central_key):
    """A user without a key of their own is told `has_central_api_key_fallback`; the resolution
    for that user is available from the provider exactly then."""
    if provider == "anthropic" and not has_central_key:
        flags = {"central_api_key_enabled": False, "allow_user_api_key": True}  # no central key allowed
    else:
        flags = {"allow_user_api_key": True, "allow_central_api_key_fallback": True}
    from app.services import legacy
    from app.services.base import Actor

    with app.app_context():
        legacy.create_provider(Actor.system("test"), provider=provider,
                               api_key=new_key("central") if has_central_key else None, **flags)
    cid = make_config(app, provider=provider, model="m")
    (shown,) = member_api.get("/user-provider-configs").get_json()
    body = resolution_of(member_api, cid)
    assert body["available"] is shown["has_central_api_key_fallback"]
    assert body["key_source"] == ("provider" if shown["has_central_api_key_fallback"] else None)
    assert body["provider"]["display_name"] == shown["display_name"]
