"""Key resolution (SPEC section 6): which provider, base URL and key serve user U with config C.

ONE code path decides, for every caller: `resolve` (one config, the resolution route),
`resolve_many` / `models_for` (the /models page, in a constant number of queries) and
`hand_out_credentials` (POST /credentials, the only place a key is decrypted for a client).

Rules, in order:

0. the user may not use the config (SPEC section 9, `access.usable_by`) -> `model_not_allowed`,
   with no provider, base URL or key source: a config that is not open to them tells them
   nothing about where it runs;
1. the config is disabled (or deleted) -> `model_disabled`;
2. its provider is disabled, deleted or (legacy) missing -> `provider_disabled`;
3. the key policy (a legacy provider's credential flags map to one, `legacy_key_policy`):
   - `provider_only`: the provider's oldest key, else `missing_api_key`;
   - `user_preferred`: the user's key if `ALLOW_BYOK`, else the provider's oldest key, else
     `user_api_key_required` (`missing_api_key` when BYOK is off);
   - `user_only`: the user's key if `ALLOW_BYOK`, else `user_api_key_required`
     (`byok_disabled` when BYOK is off).

A legacy config (no `ai_provider_id`) is served by the legacy chat provider of its type: the
provider's key is that row's `api_key` (central key), a user's key is their
`user_chat_provider_keys` row. A legacy provider appears in the summary with its type as name
and the display name `/providers` shows (`legacy.display_name`: the type's label when empty).
A deleted provider appears as `provider: null`; a disabled one with `enabled: false`.

Keyless legacy providers: whether a legacy provider's own credential can serve is
`legacy.central_key_available`, the rule `/user-provider-configs` also answers with. AWS
Bedrock needs no stored key (its requests are signed with the AWS credentials configured in the
chat backend), so a Bedrock provider whose central credential is in use resolves as available
with `key_source: "provider"`, and POST /credentials hands out `api_key: null` for it: the
caller uses its own AWS credentials. A key stored anyway is handed out as usual.

Hand-outs: an unknown or deactivated user is 404 "User not found." (deactivation is a soft
delete; a deactivated user's keys are already gone and nobody may act for them). A stored key
that cannot be decrypted with the configured keys is 409 (`UNREADABLE_KEY`, the message key
tests answer). Every hand-out call, refused ones included (malformed ids, unknown user or
config, unreadable key), writes a `credentials.hand_out` audit event, never with the key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from app import metrics
from app.crypto import DecryptionError
from app.errors import Conflict, DomainError, NotFound, unwrap
from app.extensions import db
from app.models import (
    AIProvider,
    ChatModelConfig,
    ChatProvider,
    User,
    UserAIProviderKey,
    UserChatProviderKey,
)
from app.services import audit, secrets
from app.services.access import usable_by
from app.services.base import Actor, byok_allowed, parse_uuid, transaction
from app.services.config_queries import enabled_set_query
from app.services.key_health import is_failing
from app.services.legacy import central_key_available, display_name
from app.services.model_configs import CONFIG_NOT_FOUND
from app.services.provider_keys import serving_keys

KEY_SOURCES = ("user", "provider")
REASONS = ("user_api_key_required", "missing_api_key", "byok_disabled", "provider_disabled", "model_disabled",
           "provider_keys_failing", "model_not_allowed")
USER_NOT_FOUND = "User not found."
# The same answer as a key test of an unreadable key (app.services.key_testing).
UNREADABLE_KEY = "The stored key could not be decrypted."
UNREADABLE_KEY_DETAIL = "Run `flask --app wsgi dbcrypt verify` to find unreadable keys."


@dataclass(frozen=True)
class ProviderRef:
    """What a resolution tells about the provider: an AI provider, or a legacy chat provider."""

    id: uuid.UUID
    type: str
    name: str
    display_name: str
    enabled: bool
    key_policy: str
    base_url: str
    legacy: bool = False


@dataclass(frozen=True)
class Resolution:
    model_config_id: uuid.UUID
    provider: ProviderRef | None
    base_url: str | None
    key_source: str | None
    available: bool
    reason: str | None
    # The row whose secret serves the request (provider key, user key or legacy provider);
    # only `hand_out_credentials` opens it.
    key_row: Any = field(default=None, repr=False, compare=False)
    # When the caller's own key was refused by the provider (failing, so not used): its last test.
    user_key_refused_at: datetime | None = None
    # When every shared key is failing: the last test of the one that would serve.
    shared_keys_refused_at: datetime | None = None


def legacy_key_policy(chat_provider: ChatProvider) -> str:
    """The key policy a legacy chat provider's credential flags mean (also used by migrate-legacy).

    central key only -> provider_only; user keys only -> user_only; central + user keys with
    fallback -> user_preferred; central + user keys without fallback -> user_only (the central
    key is not used for users without a key).
    """
    central, user = chat_provider.central_api_key_enabled, chat_provider.allow_user_api_key
    if central and not user:
        return "provider_only"
    if central and user and chat_provider.allow_central_api_key_fallback:
        return "user_preferred"
    return "user_only"


def choose_key(policy: str, byok: bool, user_key: Any, provider_key: Any,
               shared_keys_failing: bool = False) -> tuple[str | None, str | None, Any]:
    """THE key rule, for every caller (resolution, hand-outs, /models, the settings page and
    /user-ai-provider-keys): (key_source, reason, key) for a key policy, the deployment's BYOK
    switch and the keys that can serve (None: no such key, or only a failing one; anything else:
    that key). `shared_keys_failing`: the provider has shared keys, but every one is failing; when
    the shared key would have served, the reason is then `provider_keys_failing`."""
    no_shared = "provider_keys_failing" if shared_keys_failing else "missing_api_key"
    if policy == "provider_only":
        return ("provider", None, provider_key) if provider_key is not None else (None, no_shared, None)
    if policy == "user_preferred":
        if byok and user_key is not None:
            return "user", None, user_key
        if provider_key is not None:
            return "provider", None, provider_key
        if shared_keys_failing:
            return None, no_shared, None
        return None, "user_api_key_required" if byok else "missing_api_key", None
    if not byok:
        return None, "byok_disabled", None
    if user_key is not None:
        return "user", None, user_key
    return None, "user_api_key_required", None


# --- resolving ---------------------------------------------------------------------------------


def resolve(user: User | None, model_config_id: Any) -> Resolution:
    """The resolution of one live config for `user`.

    :raise InvalidInput: malformed id. :raise NotFound: "Chat model config not found."
    """
    config, allowed = _config_for(user.id if user is not None else None, parse_uuid(model_config_id))
    if config is None:
        raise NotFound(CONFIG_NOT_FOUND)
    return resolve_many(user, [config], allowed={config.id} if allowed else set())[0]


def _config_for(user_id: uuid.UUID | None, config_id: uuid.UUID) -> tuple[ChatModelConfig | None, bool]:
    """A live config and whether the user may use it, in one query."""
    row = db.session.execute(
        sa.select(ChatModelConfig, usable_by(user_id))
        .where(ChatModelConfig.id == config_id, ChatModelConfig.deleted.is_(False))
    ).first()
    return (row[0], bool(row[1])) if row is not None else (None, False)


def resolve_many(user: User | None, configs: list[ChatModelConfig], *, allowed: set[uuid.UUID]) -> list[Resolution]:
    """Resolutions for many configs, in their order, in at most 6 queries whatever their number.
    `allowed` holds the configs the user may use (the others resolve as `model_not_allowed`)."""
    ai_ids = {c.ai_provider_id for c in configs if c.ai_provider_id is not None and c.id in allowed}
    legacy_types = {c.provider for c in configs if c.ai_provider_id is None and c.id in allowed}
    providers = {}
    if ai_ids:
        providers = {p.id: p for p in db.session.execute(
            sa.select(AIProvider).where(AIProvider.id.in_(ai_ids))).scalars()}
    legacy = {}
    if legacy_types:
        legacy = {p.provider: p for p in db.session.execute(
            sa.select(ChatProvider).where(ChatProvider.provider.in_(legacy_types))).scalars()}
    rows = [(c, providers.get(c.ai_provider_id), legacy.get(c.provider) if c.ai_provider_id is None else None)
            for c in configs]
    return _resolve_rows(user, rows, allowed)


def models_for(user: User) -> list[tuple[ChatModelConfig, Resolution]]:
    """The user's enabled set (only configs they may use), each config with its resolution for
    them, in at most 4 queries."""
    rows = [(c, p, lp) for c, p, lp in db.session.execute(enabled_set_query(user.id))]
    return list(zip([c for c, _, _ in rows], _resolve_rows(user, rows, {c.id for c, _, _ in rows}), strict=True))


def _resolve_rows(
    user: User | None, rows: list[tuple[ChatModelConfig, AIProvider | None, ChatProvider | None]],
    allowed: set[uuid.UUID],
) -> list[Resolution]:
    """Resolve (config, AI provider, legacy provider) rows; loads the keys in at most 3 queries.
    Configs not in `allowed` are `model_not_allowed`, and nothing is loaded for them.

    A failing key (key health) is passed over: a provider is served by its oldest key that is not
    failing, and a failing user key counts as absent."""
    rows = [(c, p, lp) if c.id in allowed else (c, None, None) for c, p, lp in rows]
    byok = byok_allowed()
    serving = {p.id for _, p, _ in rows if p is not None and not p.deleted and p.enabled}
    serving_legacy = {lp.id for c, _, lp in rows if c.ai_provider_id is None and lp is not None and lp.enabled}
    shared = serving_keys(serving)
    user_keys: dict[uuid.UUID, Any] = {}
    legacy_user_keys: dict[uuid.UUID, Any] = {}
    if user is not None and byok:
        if serving:
            user_keys = {k.ai_provider_id: k for k in db.session.execute(
                sa.select(UserAIProviderKey).where(UserAIProviderKey.user_id == user.id,
                                                   UserAIProviderKey.ai_provider_id.in_(serving))).scalars()}
        if serving_legacy:
            legacy_user_keys = {k.chat_provider_id: k for k in db.session.execute(
                sa.select(UserChatProviderKey).where(UserChatProviderKey.user_id == user.id,
                                                     UserChatProviderKey.chat_provider_id.in_(serving_legacy))).scalars()}
    results = []
    for config, provider, legacy in rows:
        if config.id not in allowed:
            results.append(Resolution(config.id, None, None, None, False, "model_not_allowed"))
            continue
        if config.ai_provider_id is not None:
            ref = _ai_ref(provider)
            usable = provider is not None and provider.id in serving
            user_key = user_keys.get(config.ai_provider_id)
            provider_key = shared.get(config.ai_provider_id)
            shared_failing = provider_key is not None and is_failing(provider_key.last_test_result)
            shared_refused_at = provider_key.last_tested_at if shared_failing else None
        else:
            ref = _legacy_ref(legacy)
            usable = legacy is not None and legacy.id in serving_legacy
            user_key = legacy_user_keys.get(legacy.id) if legacy is not None else None
            provider_key = legacy if usable and central_key_available(legacy) else None
            shared_failing = provider_key is not None and is_failing(provider_key.api_key_last_test_result)
            shared_refused_at = provider_key.api_key_last_tested_at if shared_failing else None
        refused_at = None
        if user_key is not None and is_failing(user_key.last_test_result):
            user_key, refused_at = None, user_key.last_tested_at
        if shared_failing:
            provider_key = None
        results.append(_resolve_one(config, ref, usable, user_key, provider_key, byok, shared_refused_at, refused_at))
    return results


def _resolve_one(config: ChatModelConfig, ref: ProviderRef | None, usable: bool, user_key: Any, provider_key: Any,
                 byok: bool, shared_refused_at: datetime | None, refused_at: datetime | None) -> Resolution:
    base_url = ref.base_url if ref is not None else None
    if config.deleted or not config.enabled:
        return Resolution(config.id, ref, base_url, None, False, "model_disabled")
    if not usable or ref is None:
        return Resolution(config.id, ref, base_url, None, False, "provider_disabled")
    source, reason, row = choose_key(ref.key_policy, byok, user_key, provider_key, shared_refused_at is not None)
    return Resolution(config.id, ref, base_url, source, source is not None, reason, key_row=row,
                      user_key_refused_at=refused_at, shared_keys_refused_at=shared_refused_at)


def _ai_ref(provider: AIProvider | None) -> ProviderRef | None:
    if provider is None or provider.deleted:
        return None
    return ProviderRef(provider.id, provider.type, provider.name, provider.display_name or provider.name,
                       provider.enabled, provider.key_policy, provider.base_url)


def _legacy_ref(chat_provider: ChatProvider | None) -> ProviderRef | None:
    if chat_provider is None:
        return None
    return ProviderRef(chat_provider.id, chat_provider.provider, chat_provider.provider,
                       display_name(chat_provider), chat_provider.enabled,
                       legacy_key_policy(chat_provider), chat_provider.base_url, legacy=True)


# --- handing out credentials -------------------------------------------------------------------


class Handout(NamedTuple):
    resolution: Resolution
    api_key: str | None  # the key in plaintext; None when none is available, or keyless (Bedrock)
    key_id: uuid.UUID | None  # the stored key handed out (for the report of how it fared); None without api_key


def hand_out_credentials(actor: Actor, ask: tuple[Any, Any] | DomainError) -> Handout:
    """The resolution of a config for a user plus the decrypted key when available (None for a
    keyless provider, see the module docstring), and which stored key that is.

    `ask` is (user_id, model_config_id) as the request sent them, or the error that parsing the
    request body raised: that refusal is audited like any other, with reason "invalid_request".
    A user who may not use the config (SPEC section 9) gets its resolution, `model_not_allowed`,
    with no key (a 200, audited with that reason); the check is one EXISTS in the config's query.

    Every call writes a `credentials.hand_out` audit event (user id, config id, key_source,
    available and reason; never the key), refused calls included: a refusal is recorded with
    `available: false`, `refused` (the message answered) and as `reason` why it was refused
    ("invalid_request", "user_not_found", "config_not_found" or "unreadable_key"). Ids that are
    not UUIDs are recorded as sent (at most 64 characters) so the event shows what was asked for.

    :raise InvalidInput: a malformed body or id. :raise NotFound: "User not found." (unknown or
        deactivated user), "Chat model config not found." (missing or deleted config).
    :raise Conflict: UNREADABLE_KEY, the stored key cannot be decrypted with the configured keys.
    """
    refused: DomainError | None = None
    reason: str | None = None
    resolution: Resolution | None = None
    api_key: str | None = None
    key_id: uuid.UUID | None = None
    raw_user: Any = None
    raw_config: Any = None
    uid: uuid.UUID | None = None
    cid: uuid.UUID | None = None
    with transaction():
        try:
            raw_user, raw_config = unwrap(ask)
            uid = parse_uuid(raw_user, "Invalid user ID.", field="user_id")
            cid = parse_uuid(raw_config, "Invalid model config ID.", field="model_config_id")
        except DomainError as error:
            refused, reason = error, "invalid_request"
        if refused is None:
            user = db.session.execute(sa.select(User).where(User.id == uid)).scalar_one_or_none()
            config, allowed = _config_for(uid, cid)
            if user is None or not user.active:
                refused, reason = NotFound(USER_NOT_FOUND), "user_not_found"
            elif config is None:
                refused, reason = NotFound(CONFIG_NOT_FOUND), "config_not_found"
            else:
                resolution = resolve_many(user, [config], allowed={config.id} if allowed else set())[0]
                if resolution.available:
                    try:
                        api_key = _open_key(resolution.key_row)
                        key_id = resolution.key_row.id if api_key is not None else None
                    except DecryptionError:
                        refused, reason = Conflict(UNREADABLE_KEY, detail=UNREADABLE_KEY_DETAIL), "unreadable_key"
        audit.record(
            actor, "credentials.hand_out", "chat_model_config", cid,
            user_id=uid if uid is not None else _as_sent(raw_user),
            model_config_id=cid if cid is not None else _as_sent(raw_config),
            key_source=resolution.key_source if resolution else None,
            **({"key_id": key_id} if key_id is not None else {}),
            available=resolution.available if resolution and refused is None else False,
            reason=reason if refused else resolution.reason,
            **({"refused": refused.message} if refused else {}),
        )
    metrics.count_handout(reason if refused else ("available" if resolution.available else resolution.reason))
    if refused is not None:
        raise refused
    return Handout(resolution, api_key, key_id)


def _open_key(row: Any) -> str | None:
    """The plaintext of the row that serves; None for a keyless legacy provider (Bedrock)."""
    if isinstance(row, ChatProvider) and row.api_key_ciphertext is None:
        return None
    return secrets.open_secret(row)


def _as_sent(value: Any) -> str | None:
    """A malformed id as the audit event records it: a string of at most 64 characters."""
    if value is None:
        return None
    return (value if isinstance(value, str) else repr(value))[:64]
