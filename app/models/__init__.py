"""Typed SQLAlchemy 2.0 models, one module per area. No commits, no request state here."""

from app.models.audit import AuditEvent
from app.models.crypto import EncryptionKey
from app.models.groups import ACCESS_MODES, MEMBER_SOURCES, Group, GroupMember, ModelConfigGroup
from app.models.legacy import ChatProvider, UserChatProviderKey
from app.models.model_configs import ChatModelConfig
from app.models.providers import (
    FAILING_RESULTS,
    KEY_POLICIES,
    PROVIDER_TYPES,
    TEST_RESULTS,
    AIProvider,
    AIProviderKey,
    UserAIProviderKey,
)
from app.models.sso import UserIdentity
from app.models.users import ROLES, ApiToken, User, UserSession

__all__ = [
    "ACCESS_MODES",
    "FAILING_RESULTS",
    "KEY_POLICIES",
    "MEMBER_SOURCES",
    "PROVIDER_TYPES",
    "ROLES",
    "TEST_RESULTS",
    "AIProvider",
    "AIProviderKey",
    "ApiToken",
    "AuditEvent",
    "ChatModelConfig",
    "ChatProvider",
    "EncryptionKey",
    "Group",
    "GroupMember",
    "ModelConfigGroup",
    "User",
    "UserAIProviderKey",
    "UserChatProviderKey",
    "UserIdentity",
    "UserSession",
]
