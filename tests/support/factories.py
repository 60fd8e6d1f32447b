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
