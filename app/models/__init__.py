"""Typed SQLAlchemy 2.0 models, one module per area. No commits, no request state here."""

from app.models.audit import AuditEvent
from app.models.crypto import EncryptionKey
from app.models.legacy import ChatProvider, UserChatProviderKey
from app.models.model_configs import ChatModelConfig
from app.models.providers import (
    KEY_POLICIES,
    PROVIDER_TYPES,
    AIProvider,
    AIProviderKey,
    UserAIProviderKey,
)
from app.models.users import ROLES, ApiToken, User, UserSession

__all__ = [
    "KEY_POLICIES",
    "PROVIDER_TYPES",
    "ROLES",
    "AIProvider",
    "AIProviderKey",
    "ApiToken",
    "AuditEvent",
    "ChatModelConfig",
    "ChatProvider",
    "EncryptionKey",
    "User",
    "UserAIProviderKey",
    "UserChatProviderKey",
    "UserSession",
]
