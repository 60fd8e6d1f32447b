"""API tokens: random, stored only as SHA-256, shown once, revocable."""

from __future__ import annotations

import hashlib
import secrets
import uuid

import sqlalchemy as sa

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound, Validation
from app.extensions import db
from app.models import ApiToken, User
from app.services import audit
from app.services.base import Actor, transaction

TOKEN_PREFIX = "sb_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(actor: Actor, owner: User, name: str = "", *, service: bool = False) -> tuple[ApiToken, str]:
    """Create a token for `owner`; returns the row and the plaintext, which is never stored.

    The token is `sb_` and 32 random bytes (URL-safe base64); only its SHA-256 is kept.

    :raise InvalidInput: the name is too long. :raise Conflict: the owner is deactivated.
    """
    name = (name or "").strip()
    if len(name) > 128:
        raise InvalidInput("Invalid token name.", validations=[Validation("name", "At most 128 characters.")])
    if not owner.active:
        raise Conflict("User is deactivated.")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction():
        token = ApiToken(
            user_id=owner.id, name=name or ("service token" if service else "token"),
            token_hash=hash_token(plaintext), prefix=plaintext[:7], is_service=service,
        )
        db.session.add(token)
        db.session.flush()
        audit.record(actor, "token.create", "api_token", token.id, owner_id=owner.id, service=service)
    return token, plaintext


def list_tokens(owner: User) -> list[ApiToken]:
    return list(db.session.execute(
        sa.select(ApiToken).where(ApiToken.user_id == owner.id, ApiToken.revoked_at.is_(None)).order_by(ApiToken.created_at)
    ).scalars())


def revoke_token(actor: Actor, owner: User, token_id: uuid.UUID) -> None:
    """Revoke one of `owner`'s tokens. :raise NotFound: no live token of theirs with that id."""
    with transaction():
        token = db.session.execute(
            sa.select(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.user_id == owner.id, ApiToken.revoked_at.is_(None))
            .with_for_update(of=ApiToken)  # not the eagerly joined owner: PostgreSQL refuses that
        ).scalar_one_or_none()
        if token is None:
            raise NotFound("Token not found.")
        token.revoked_at = utcnow()
        audit.record(actor, "token.revoke", "api_token", token.id)


def authenticate_token(plaintext: str) -> ApiToken | None:
    """The live token for `plaintext` whose owner is active, or None."""
    if not plaintext or len(plaintext) > 256:
        return None
    token = db.session.execute(
        sa.select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext))
    ).scalar_one_or_none()
    if token is None or token.revoked_at is not None or not token.user.active:
        return None
    return token
