"""Chat model configs (SPEC section 6): create, edit, default, delete."""

from __future__ import annotations

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import ChatModelConfig
from app.services import audit
from app.services.base import Actor


def promote_default_if_missing(actor: Actor) -> ChatModelConfig | None:
    """When no live config is the default, make the oldest live config (created_at, then id)
    the default. Flushes only; runs inside the caller's transaction."""
    has_default = db.session.execute(
        sa.select(sa.exists().where(ChatModelConfig.is_default.is_(True), ChatModelConfig.deleted.is_(False)))
    ).scalar()
    if has_default:
        return None
    candidate = db.session.execute(
        sa.select(ChatModelConfig).where(ChatModelConfig.deleted.is_(False))
        .order_by(ChatModelConfig.created_at, ChatModelConfig.id).limit(1).with_for_update()
    ).scalar_one_or_none()
    if candidate is None:
        return None
    candidate.is_default = True
    candidate.updated_at = utcnow()
    db.session.flush()
    audit.record(actor, "model_config.promote_default", "chat_model_config", candidate.id, model=candidate.model)
    return candidate
