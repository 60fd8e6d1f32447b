"""Rows made through the services, the way the app makes them: providers and their keys.

Users and tokens are made by `tests.support.make_user` / `make_token`; these cover the provider
side that more than one test module needs."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from tests.support import new_key


def make_provider(app, name: str, policy: str = "user_preferred", *, enabled: bool = True,
                  shared_key: bool = False, display_name: str = "", type: str = "openai") -> str:
    from app.services import provider_keys, providers
    from app.services.base import Actor

    with app.app_context():
        provider = providers.create_provider(Actor.system("test"), type=type, name=name, display_name=display_name,
                                             key_policy=policy, enabled=enabled)
        if shared_key:
            provider_keys.add_key(Actor.system("test"), provider.id, new_key("shared"))
        return str(provider.id)


def update_provider(app, provider_id: str, **changes) -> None:
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        providers.update_provider(Actor.system("test"), provider_id, changes)


def delete_provider(app, provider_id: str) -> None:
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        providers.delete_provider(Actor.system("test"), provider_id)


def key_rows(app, *, user=None, provider_id: str | None = None) -> int:
    from app.extensions import db
    from app.models import UserAIProviderKey

    with app.app_context():
        stmt = sa.select(sa.func.count()).select_from(UserAIProviderKey)
        if user is not None:
            stmt = stmt.where(UserAIProviderKey.user_id == user.id)
        if provider_id is not None:
            stmt = stmt.where(UserAIProviderKey.ai_provider_id == uuid.UUID(provider_id))
        return db.session.execute(stmt).scalar_one()


def stored_key(app, user, provider_id: str):
    """The caller's row as stored: (id, created_at, updated_at, hint, plaintext)."""
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services.secrets import open_secret

    with app.app_context():
        row = db.session.execute(sa.select(UserAIProviderKey).where(
            UserAIProviderKey.user_id == user.id, UserAIProviderKey.ai_provider_id == uuid.UUID(provider_id))
        ).scalar_one()
        return row.id, row.created_at, row.updated_at, row.hint, open_secret(row)


def make_config(app, provider_id: str, model: str, **fields) -> str:
    """A model config on an AI provider, made through the service; its id."""
    from app.services import model_configs
    from app.services.base import Actor

    with app.app_context():
        return str(model_configs.create_config(Actor.system("test"), ai_provider_id=provider_id, model=model,
                                               **fields).id)


def make_group(app, name: str, members=(), display_name: str = "") -> str:
    """A group with these users as manual members, made through the service; its id."""
    from app.services import groups
    from app.services.base import Actor

    with app.app_context():
        group = groups.create_group(Actor.system("test"), name=name, display_name=display_name)
        for user in members:
            groups.add_member(Actor.system("test"), group.id, user.id)
        return str(group.id)


def restrict_config(app, config_id: str, group_ids) -> None:
    """Open a model config only to these groups (none: to no one), through the service."""
    from app.services import model_configs
    from app.services.base import Actor

    with app.app_context():
        model_configs.update_config(Actor.system("test"), config_id,
                                    {"access": "groups", "group_ids": [str(g) for g in group_ids]})


def audit_events(app, action: str) -> list[dict]:
    """Audit events whose action is `action`, or starts with it when it ends with a dot; oldest first."""
    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        stmt = sa.select(AuditEvent).order_by(AuditEvent.created_at, AuditEvent.id)
        stmt = stmt.where(AuditEvent.action.startswith(action) if action.endswith(".") else AuditEvent.action == action)
        events = [{"action": e.action, "resource_type": e.resource_type, "resource_id": e.resource_id,
                   "actor_label": e.actor_label, "details": e.details} for e in db.session.execute(stmt).scalars()]
        db.session.rollback()
        return events


def oldest_first(key_ids) -> None:
    """Give the keys distinct ages in their order (the first the oldest): "oldest" is well defined."""
    from datetime import timedelta

    from app.db import utcnow
    from app.extensions import db
    from app.models import AIProviderKey

    now = utcnow()
    for age, key_id in enumerate(reversed(key_ids), start=1):
        db.session.execute(sa.update(AIProviderKey).where(AIProviderKey.id == uuid.UUID(str(key_id)))
                           .values(created_at=now - timedelta(minutes=age)))
    db.session.commit()
