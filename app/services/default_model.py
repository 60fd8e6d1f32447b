"""The default model (SPEC section 6): at most one live default, switched and promoted without
ever leaving zero or two.

- At most one live config is the default; the database enforces it with the partial unique
  index `uq_chat_model_configs_default`.
- The first live config becomes the default. Deleting the default (or the provider it runs on)
  promotes another live config (`promote_default_if_missing`): the one people can use.
- Switching takes the default mutex, share-locks the providers involved, locks the current
  default, unsets it, flushes, then sets the new one, in one transaction (`make_default`, lock
  order below). Should a provider deletion move the default meanwhile, the switch is retried a few
  times and then answered with 409.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.db import utcnow
from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import AIProvider, ChatModelConfig
from app.services import audit
from app.services.base import Actor, is_unique_violation, lock_one
from app.services.config_queries import in_enabled_set, live, with_providers

CONFIG_NOT_FOUND = "Chat model config not found."
DEFAULT_INDEX = "uq_chat_model_configs_default"
DEFAULT_SWITCH_ATTEMPTS = 5


# Default changes (switch, first config, deletion of a config) run in this lock order, so two of
# them never wait on each other in a cycle:
#   1. the default mutex: a transaction-scoped advisory lock on PostgreSQL (SQLite's immediate
#      write transaction already serialises writers), so "the current default" cannot move
#      between reading it and locking it, except by a provider deletion;
#   2. FOR SHARE on the AI provider rows of the configs involved, in id order: a provider
#      deletion (which locks its provider row first, then its configs) either finishes before
#      we touch its configs or waits for us, never half-way;
#   3. FOR UPDATE on the current default, then on the target.
# Provider deletion promotes without the mutex; it never needs a row that 1-3 hold without first
# holding the provider row that step 2 shares, so it cannot close a cycle either.
DEFAULT_MUTEX_KEY = 0x5B0A4D_DEFA17  # any fixed 64-bit number, used by nothing else


class _DefaultMoved(Exception):
    """The default changed between reading and locking it: roll the attempt back and retry."""


def serialize_default_changes() -> None:
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(DEFAULT_MUTEX_KEY)))


def share_lock_providers(provider_ids: set[uuid.UUID | None]) -> None:
    ids = sorted(i for i in provider_ids if i is not None)
    if ids:
        db.session.execute(sa.select(AIProvider.id).where(AIProvider.id.in_(ids)).order_by(AIProvider.id)
                           .with_for_update(read=True)).all()


def _current_default_query() -> sa.Select:
    return (sa.select(ChatModelConfig)
            .where(ChatModelConfig.is_default.is_(True), ChatModelConfig.deleted.is_(False))
            .execution_options(populate_existing=True))


def make_default(target_id: uuid.UUID, *, only_if_missing: bool = False) -> bool:
    """Make a live config the default: unset the current default, flush, set the target, flush.
    Call with the default mutex held. Returns whether the target became the default now.

    With `only_if_missing`, only when there is no live default (the first config). An attempt is
    rolled back to its savepoint (releasing its row locks) and retried when a provider deletion
    moved the default meanwhile.

    :raise NotFound: the target is not live. :raise Conflict: the default kept moving.
    """
    if only_if_missing and _has_default():
        return False  # the common case (every config but the first): no savepoint needed to say so
    for _attempt in range(DEFAULT_SWITCH_ATTEMPTS):
        try:
            with db.session.begin_nested():
                current = db.session.execute(_current_default_query()).scalar_one_or_none()
                if current is not None and (only_if_missing or current.id == target_id):
                    return False
                target = db.session.execute(live(target_id)).scalar_one_or_none()
                if target is None:
                    raise NotFound(CONFIG_NOT_FOUND)
                share_lock_providers({target.ai_provider_id, current.ai_provider_id if current else None})
                if current is not None:
                    if lock_one(_current_default_query().where(ChatModelConfig.id == current.id)) is None:
                        raise _DefaultMoved
                    current.is_default = False
                    current.updated_at = utcnow()
                    db.session.flush()
                target = lock_one(live(target_id).execution_options(populate_existing=True))
                if target is None:
                    raise NotFound(CONFIG_NOT_FOUND)
                target.is_default = True
                db.session.flush()
            return True
        except _DefaultMoved:
            continue
        except IntegrityError as error:
            if not is_unique_violation(error, DEFAULT_INDEX):
                raise
    raise Conflict("The default model changed at the same time; try again.", field="is_default")


def _has_default() -> bool:
    return db.session.execute(
        sa.select(sa.exists().where(ChatModelConfig.is_default.is_(True), ChatModelConfig.deleted.is_(False)))
    ).scalar()


def promote_default_if_missing(actor: Actor) -> ChatModelConfig | None:
    """When no live config is the default, make one the default, the one people can use (SPEC
    section 6, "Default promotion"): configs in the enabled set first, then other enabled configs,
    then the rest; within each, the oldest (created_at, then id). Who may use a config (its access,
    SPEC section 9) does not enter into it: the SPEC's order is the order. Flushes only; runs inside
    the caller's transaction.

    Should a concurrent transaction set a default at the same moment, that one stays the default.
    """
    if _has_default():
        return None
    usefulness = sa.case((in_enabled_set(), 0), (ChatModelConfig.enabled, 1), else_=2)
    candidate = db.session.execute(
        with_providers(sa.select(ChatModelConfig)).where(ChatModelConfig.deleted.is_(False))
        .order_by(usefulness, ChatModelConfig.created_at, ChatModelConfig.id)
        .limit(1).with_for_update(of=ChatModelConfig)
    ).scalar_one_or_none()
    if candidate is None:
        return None
    try:
        with db.session.begin_nested():
            candidate.is_default = True
            candidate.updated_at = utcnow()
            db.session.flush()
    except IntegrityError as error:
        if is_unique_violation(error, DEFAULT_INDEX):
            return None
        raise
    audit.record(actor, "model_config.promote_default", "chat_model_config", candidate.id, model=candidate.model)
    return candidate
