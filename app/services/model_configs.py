"""Chat model configs (SPEC sections 6 and 9): list, create, edit, delete, and the enabled set.

Every rule of a model config lives here; the JSON API and the admin pages call these functions
and map the errors they raise. The default model's mechanics (switching under locks, promotion)
are `app.services.default_model`; the statements lists and resolution share are
`app.services.config_queries`.

- The first live config becomes the default. While live configs exist there is always a default:
  `is_default: false` on the current default is refused (400 "A default model is required while
  configs exist."); make another config the default instead.
- A disabled config may stay (or become) the default: the admin decides.
- Who may use a config (`access`, `group_ids`) follows the rules of `app.services.access`; the
  enabled set of a user holds only the configs they may use, admins included.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound, Validation
from app.extensions import db
from app.models import PROVIDER_TYPES, AIProvider, ChatModelConfig, ChatProvider
from app.services import access as access_rules
from app.services import audit
from app.services.base import Actor, Page, count, flush_unique, lock_one, parse_uuid, transaction
from app.services.config_queries import enabled_set_query, live, ordered
from app.services.default_model import (
    CONFIG_NOT_FOUND,
    make_default,
    promote_default_if_missing,
    serialize_default_changes,
    share_lock_providers,
)
from app.services.text import clean_text

PROVIDER_NOT_FOUND = "AI provider not found."
DEFAULT_REQUIRED = "A default model is required while configs exist."
DUPLICATE_INDEXES = ("uq_chat_model_configs_provider_model_live", "uq_chat_model_configs_legacy_model_live")

MODEL_MAX = 256
DISPLAY_NAME_MAX = 256
CONTEXT_LIMIT_MAX = 2**31 - 1  # the column is a 32-bit integer
OPTIONS_MAX_BYTES = 65536
DEFAULT_CONTEXT_LIMIT = 128000
DEFAULT_COMPRESSION_THRESHOLD = 70

UPDATABLE = ("model", "display_name", "enabled", "is_default", "context_limit", "compression_threshold", "options",
             "access", "group_ids")
IMMUTABLE = ("ai_provider_id", "provider")


# --- field rules -------------------------------------------------------------------------------


def clean_model(raw: Any) -> str:
    """Trimmed, not empty, at most 256 characters of plain text. :raise InvalidInput: "Model is required." """
    model = raw.strip() if isinstance(raw, str) else ""
    if not model:
        raise InvalidInput("Model is required.", validations=[Validation("model", "Enter the provider's model id.")])
    return clean_text(model, "model", "Invalid model.", MODEL_MAX, noun="Model ids", as_validation=True)


def clean_display_name(raw: Any) -> str:
    """Trimmed, at most 256 characters of plain text; empty means none (the model id is shown)."""
    return clean_text(raw, "display_name", "Invalid display name.", DISPLAY_NAME_MAX, noun="Display names",
                      as_validation=True)


def clean_context_limit(raw: Any) -> int:
    """A whole number above 0. :raise InvalidInput: with a validation naming `context_limit`."""
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= CONTEXT_LIMIT_MAX:
        raise InvalidInput("Invalid context limit.", validations=[
            Validation("context_limit", f"Must be a whole number between 1 and {CONTEXT_LIMIT_MAX}.")])
    return raw


def clean_compression_threshold(raw: Any) -> int:
    """A whole number from 0 to 100. :raise InvalidInput: with a validation naming `compression_threshold`."""
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 100:
        raise InvalidInput("Invalid compression threshold.", validations=[
            Validation("compression_threshold", "Must be a whole number from 0 to 100.")])
    return raw


def clean_options(raw: Any) -> dict[str, Any]:
    """A JSON object (of at most 64 KiB once serialised). :raise InvalidInput:"""
    if not isinstance(raw, dict):
        raise InvalidInput("Invalid options.", validations=[Validation("options", "Options must be a JSON object.")])
    try:
        size = len(json.dumps(raw, allow_nan=False).encode())
    except (TypeError, ValueError):
        raise InvalidInput("Invalid options.", validations=[
            Validation("options", "Options must be plain JSON (no NaN or Infinity).")]) from None
    if size > OPTIONS_MAX_BYTES:
        raise InvalidInput("Invalid options.",
                           validations=[Validation("options", f"Options may hold at most {OPTIONS_MAX_BYTES} bytes.")])
    return raw


def clean_bool(field: str) -> Any:
    def clean(raw: Any) -> bool:
        if not isinstance(raw, bool):
            raise InvalidInput("Invalid request body.", validations=[Validation(field, "Must be true or false.")])
        return raw

    return clean


_CLEANERS = {
    "model": clean_model,
    "display_name": clean_display_name,
    "enabled": clean_bool("enabled"),
    "is_default": clean_bool("is_default"),
    "context_limit": clean_context_limit,
    "compression_threshold": clean_compression_threshold,
    "options": clean_options,
    "access": access_rules.clean_access,
    "group_ids": access_rules.clean_group_ids,
}


def clean_fields(fields: dict[str, Any]) -> tuple[dict[str, Any], list[InvalidInput]]:
    """Every field rule at once: the cleaned values of the fields that pass and the error of each
    one that does not. Fields without a rule here are left out."""
    cleaned, errors = {}, []
    for field, value in fields.items():
        if field in _CLEANERS:
            try:
                cleaned[field] = _CLEANERS[field](value)
            except InvalidInput as error:
                errors.append(error)
    return cleaned, errors


# What a field left out of a new config becomes (the API's defaults; also the configuration import's).
DEFAULTS = {"display_name": "", "enabled": True, "context_limit": DEFAULT_CONTEXT_LIMIT,
            "compression_threshold": DEFAULT_COMPRESSION_THRESHOLD, "options": {}}


# --- reads -------------------------------------------------------------------------------------


def get_config(config_id: Any) -> ChatModelConfig:
    """A live config. :raise InvalidInput: malformed id. :raise NotFound: "Chat model config not found." """
    config = db.session.execute(live(parse_uuid(config_id))).scalar_one_or_none()
    if config is None:
        raise NotFound(CONFIG_NOT_FOUND)
    return config


def get_config_with_provider(config_id: Any) -> tuple[ChatModelConfig, AIProvider | None]:
    """A live config and its AI provider (None for legacy configs), in one query. :raise NotFound:"""
    row = db.session.execute(
        sa.select(ChatModelConfig, AIProvider).outerjoin(AIProvider, AIProvider.id == ChatModelConfig.ai_provider_id)
        .where(ChatModelConfig.id == parse_uuid(config_id), ChatModelConfig.deleted.is_(False))
    ).first()
    if row is None:
        raise NotFound(CONFIG_NOT_FOUND)
    return row[0], row[1]


def list_configs(page: Page = Page()) -> tuple[list[ChatModelConfig], int]:
    """Every live config, disabled ones included (what admins see)."""
    stmt = sa.select(ChatModelConfig).where(ChatModelConfig.deleted.is_(False))
    total = count(stmt)
    return list(db.session.execute(page.apply(ordered(stmt))).scalars()), total


def list_configs_with_providers(page: Page = Page()) -> tuple[list[tuple[ChatModelConfig, AIProvider | None]], int]:
    """Every live config with its AI provider (None for legacy configs), in one query."""
    stmt = (sa.select(ChatModelConfig, AIProvider)
            .outerjoin(AIProvider, AIProvider.id == ChatModelConfig.ai_provider_id)
            .where(ChatModelConfig.deleted.is_(False)))
    total = count(sa.select(ChatModelConfig).where(ChatModelConfig.deleted.is_(False)))
    return [(c, p) for c, p in db.session.execute(page.apply(ordered(stmt)))], total


def enabled_set(user_id: uuid.UUID | None, page: Page = Page()) -> tuple[
        list[tuple[ChatModelConfig, AIProvider | None, ChatProvider | None]], int]:
    """A user's enabled set with each config's provider row: two statements (count and page)."""
    stmt = enabled_set_query(user_id)
    total = count(stmt)
    rows = db.session.execute(page.apply(stmt)).all()
    return [(c, p, lp) for c, p, lp in rows], total


def list_enabled(user_id: uuid.UUID | None, page: Page = Page()) -> tuple[list[ChatModelConfig], int]:
    """The configs of a user's enabled set: the ones they may pick now (admins included)."""
    rows, total = enabled_set(user_id, page)
    return [c for c, _, _ in rows], total


def list_visible(actor: Actor, page: Page = Page()) -> tuple[list[ChatModelConfig], int]:
    """Admins: every live config (they manage them all). Everyone else: their enabled set."""
    return list_configs(page) if actor.is_admin else list_enabled(actor.user_id, page)


def get_visible(actor: Actor, config_id: Any) -> ChatModelConfig:
    """Admins: any live config. Everyone else: a config of their enabled set (one they may not
    use is as unknown to them as a deleted one).

    :raise NotFound: "Chat model config not found."
    """
    cid = parse_uuid(config_id)
    if actor.is_admin:
        return get_config(cid)
    row = db.session.execute(enabled_set_query(actor.user_id).where(ChatModelConfig.id == cid)).first()
    if row is None:
        raise NotFound(CONFIG_NOT_FOUND)
    return row[0]


def group_ids_by_config(configs: list[ChatModelConfig]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The groups (ids, by group name) of the configs open only to groups, in at most one query."""
    return access_rules.group_ids_by_config([c.id for c in configs if c.access == "groups"])


def selectable_providers() -> list[AIProvider]:
    """Live, enabled AI providers: the ones a new config may run on, ordered by name."""
    return list(db.session.execute(
        sa.select(AIProvider).where(AIProvider.deleted.is_(False), AIProvider.enabled.is_(True))
        .order_by(AIProvider.name, AIProvider.id)
    ).scalars())


# --- writes ------------------------------------------------------------------------------------


def create_config(
    actor: Actor,
    *,
    ai_provider_id: Any = None,
    provider: Any = None,
    model: Any = None,
    display_name: Any = None,
    enabled: Any = None,
    is_default: Any = None,
    context_limit: Any = None,
    compression_threshold: Any = None,
    options: Any = None,
    access: Any = None,
    group_ids: Any = None,
) -> ChatModelConfig:
    """Add a chat model config on a live, enabled AI provider (read under a shared row lock in
    this transaction, so a concurrent provider deletion cannot leave a live config behind).
    `access` (default `everyone`) and `group_ids` say who may use it (`app.services.access`); the
    groups named are read under a shared row lock too, so a concurrent group deletion cannot
    leave an access row behind.

    Without `ai_provider_id`, a `provider` type that has a legacy chat provider creates a legacy
    config (a disabled one: 400 "Provider is disabled."). `provider`, when sent with an AI
    provider, must be that provider's type. The first live config becomes the default;
    `is_default: true` makes the new config the default.

    Checks, in the order of SPEC section 6: `ai_provider_id` required (400 "AI provider ID is
    required.", unless the legacy case above) and well formed; then, inside the transaction
    under the shared lock, the provider live (404 "AI provider not found."), enabled (400 "AI
    provider is disabled.") and of the `provider` type sent; only then the field rules (model,
    display name, limits, options, access) and the duplicate check (409); then the groups named
    (400 "Group not found.").

    :raise InvalidInput: "AI provider ID is required.", "AI provider is disabled.",
        "Model is required.", "Invalid model access.", "Group not found.", a bad field.
    :raise NotFound: "AI provider not found."
    :raise Conflict: "Chat model config already exists." (same model on the same provider).
    """
    pid = None if ai_provider_id in (None, "") else parse_uuid(
        ai_provider_id, "Invalid AI provider ID.", field="ai_provider_id")
    with transaction():
        provider_type = _lock_provider(pid, provider)
        sent = {"display_name": display_name, "enabled": enabled, "context_limit": context_limit,
                "compression_threshold": compression_threshold, "options": options}
        fields = {"model": clean_model(model), **{f: _CLEANERS[f](v) for f, v in sent.items() if v is not None}}
        wants_default = False if is_default is None else clean_bool("is_default")(is_default)
        who = access_rules.access_change(access=access, group_ids=[] if group_ids is None else group_ids)
        config = insert_config(actor, pid, provider_type, fields, wants_default=wants_default, who=who)
    return config


def insert_config(actor: Actor, provider_id: uuid.UUID | None, provider_type: str, fields: dict[str, Any], *,
                  wants_default: bool = False, who: access_rules.AccessChange | None = None) -> ChatModelConfig:
    """Add a config of cleaned `fields` (`model` required; the others take DEFAULTS) on a provider
    the caller has checked and share-locked, in the current transaction, open to `who` (everyone
    by default): it becomes the default when `wants_default` or when there is none. Audited.
    Flushes only.

    :raise Conflict: "Chat model config already exists." :raise InvalidInput: "Group not found."
    """
    who = who or access_rules.access_change(access=None, group_ids=[])
    config = ChatModelConfig(id=uuid.uuid4(), ai_provider_id=provider_id, provider=provider_type, is_default=False,
                             access=who.access, created_by=actor.user_id, updated_by=actor.user_id,
                             **{**DEFAULTS, **fields})
    db.session.add(config)
    _flush_or_conflict()  # before the default mutex: a duplicate waits on the index, holding no mutex
    who_changed = access_rules.write_access(config, who, created=True)
    serialize_default_changes()
    make_default(config.id, only_if_missing=not wants_default)
    audit.record(actor, "model_config.create", "chat_model_config", config.id, ai_provider_id=provider_id,
                 provider=provider_type, model=config.model, enabled=config.enabled, is_default=config.is_default,
                 legacy=provider_id is None, **who_changed)
    return config


def _lock_provider(pid: uuid.UUID | None, provider: Any) -> str:
    """The provider a new config runs on, read under a shared row lock: its type.

    With an id: the live AI provider (404), enabled (400), of the `provider` type when one was
    sent (400). Without: the legacy chat provider of the `provider` type (400 "AI provider ID is
    required." when there is none, "Provider is disabled." when it is off).
    """
    if pid is not None:
        ai_provider = lock_one(sa.select(AIProvider).where(AIProvider.id == pid, AIProvider.deleted.is_(False)),
                               shared=True)
        if ai_provider is None:
            raise NotFound(PROVIDER_NOT_FOUND, field="ai_provider_id")
        if not ai_provider.enabled:
            raise InvalidInput("AI provider is disabled.", field="ai_provider_id")
        if provider is not None and provider != ai_provider.type:
            raise InvalidInput("Invalid provider.", validations=[
                Validation("provider", "Must be the AI provider's type, or left out.")])
        return ai_provider.type
    legacy = None
    if isinstance(provider, str) and provider in PROVIDER_TYPES:
        legacy = lock_one(sa.select(ChatProvider).where(ChatProvider.provider == provider), shared=True)
    if legacy is None:
        raise InvalidInput("AI provider ID is required.", field="ai_provider_id")
    if not legacy.enabled:
        raise InvalidInput("Provider is disabled.", field="provider")
    return legacy.provider


def update_config(actor: Actor, config_id: Any, changes: dict[str, Any]) -> ChatModelConfig:
    """Change any of model, display name, enabled, is_default, context limit, compression
    threshold, options, access and group_ids, with the row locked. `is_default: true` unsets the
    previous default in the same transaction; `is_default: false` on the default is refused.
    `group_ids` alone replaces the list of a config open to groups (and is refused for one open
    to everyone); `access: "everyone"` clears the list (see `access.access_change`).

    :raise InvalidInput: an unknown or immutable field, a bad value, DEFAULT_REQUIRED,
        "Invalid model access." or "Group not found."
    :raise NotFound: "Chat model config not found." :raise Conflict: the model is taken, or the
        default kept changing under a concurrent switch.
    """
    cid = parse_uuid(config_id)
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidInput("Invalid request body.", validations=[
            Validation(f, "This field cannot be changed." if f in IMMUTABLE else "Unknown field.") for f in unknown])
    cleaned = {field: _CLEANERS[field](value) for field, value in changes.items()}
    with transaction():
        config = apply_config_update(actor, cid, cleaned)
    return config


def apply_config_update(actor: Actor, config_id: uuid.UUID, cleaned: dict[str, Any]) -> ChatModelConfig:
    """`update_config` with cleaned changes, inside the caller's transaction (flushes only).

    :raise InvalidInput: DEFAULT_REQUIRED, "Group not found." :raise NotFound: :raise Conflict:
    """
    cid = config_id
    cleaned = dict(cleaned)
    wants_default = cleaned.pop("is_default", None)
    who = {f: cleaned.pop(f) for f in ("access", "group_ids") if f in cleaned}
    became_default = False
    if wants_default:
        # The switch comes first so its locks are taken in the one order every default
        # change uses (mutex, providers, current default, target).
        serialize_default_changes()
        became_default = make_default(cid)
    config = lock_one(live(cid))
    if config is None:
        raise NotFound(CONFIG_NOT_FOUND)
    if wants_default is False and config.is_default:
        raise InvalidInput(DEFAULT_REQUIRED, detail="Make another model the default instead.", field="is_default")
    changed = {f: v for f, v in cleaned.items() if getattr(config, f) != v}
    for field, value in changed.items():
        setattr(config, field, value)
    access_change = access_rules.access_change(**who, current=config.access)
    if access_change is not None:
        changed.update(access_rules.write_access(config, access_change))
    if changed or became_default:
        config.updated_at = utcnow()
        config.updated_by = actor.user_id
        _flush_or_conflict()
        audit.record(actor, "model_config.update", "chat_model_config", config.id,
                     fields=sorted([*changed, *(["is_default"] if became_default else [])]),
                     **{k: v for k, v in changed.items() if k != "options"},
                     **({"is_default": True} if became_default else {}))
    return config


def set_default(actor: Actor, config_id: Any) -> ChatModelConfig:
    """Make a live config the default (the previous one is unset in the same transaction).

    :raise NotFound: :raise Conflict: see `update_config`.
    """
    return update_config(actor, config_id, {"is_default": True})


def delete_config(actor: Actor, config_id: Any) -> None:
    """Soft-delete a config; when it was the default, another live config becomes the default.

    :raise NotFound: "Chat model config not found." (missing or already deleted).
    """
    cid = parse_uuid(config_id)
    with transaction():
        remove_config(actor, cid)


def remove_config(actor: Actor, config_id: uuid.UUID) -> None:
    """`delete_config` inside the caller's transaction (flushes only). :raise NotFound:"""
    cid = config_id
    serialize_default_changes()
    found = db.session.execute(live(cid)).scalar_one_or_none()
    if found is None:
        raise NotFound(CONFIG_NOT_FOUND)
    share_lock_providers({found.ai_provider_id})
    config = lock_one(live(cid))
    if config is None:
        raise NotFound(CONFIG_NOT_FOUND)
    was_default = config.is_default
    now = utcnow()
    config.deleted = True
    config.deleted_at = now
    config.is_default = False
    config.updated_at = now
    config.updated_by = actor.user_id
    db.session.flush()
    audit.record(actor, "model_config.delete", "chat_model_config", config.id, model=config.model,
                 ai_provider_id=config.ai_provider_id, provider=config.provider, was_default=was_default)
    if was_default:
        promote_default_if_missing(actor)


# --- helpers -----------------------------------------------------------------------------------


def _flush_or_conflict() -> None:
    duplicate = Conflict("Chat model config already exists.", field="model")
    flush_unique(dict.fromkeys(DUPLICATE_INDEXES, duplicate))
