from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class EncryptionKey(Base):
    """A known encryption key, by digest, with a test value that only that key decrypts."""

    __tablename__ = "encryption_keys"

    digest: Mapped[str] = mapped_column(sa.String(7), primary_key=True)
    test_ciphertext: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
