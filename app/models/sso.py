from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_uuid, utcnow


class UserIdentity(Base):
    """A user's account at an identity provider (single sign-on): the provider's `iss` and the
    user's `sub` there, which never change, unlike the email. `email` is the address the provider
    gave when the link was made, kept for the audit trail only; sign-in matches on (issuer, subject).
    """

    __tablename__ = "user_identities"
    __table_args__ = (sa.UniqueConstraint("issuer", "subject", name="uq_user_identities_issuer_subject"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(sa.String(512))
    subject: Mapped[str] = mapped_column(sa.String(255))
    email: Mapped[str] = mapped_column(sa.String(254), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
