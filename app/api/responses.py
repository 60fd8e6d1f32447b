"""The JSON shapes the API answers with, as pydantic models.

They are the single description of every response: `app.api.openapi` publishes them in
`/api/openapi.json`, and in TESTING mode every JSON response of the API is validated against the
model its route declares (`@doc(responses=...)`), so a serializer that adds, drops or retypes a
field fails the tests instead of drifting away from the description.

Models are strict and refuse unknown fields. An optional field that is never `null` is typed
`X | SkipJsonSchema[None] = None`: absent in the answer, never null in the description.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from app.models import ACCESS_MODES, KEY_POLICIES, MEMBER_SOURCES, PROVIDER_TYPES, ROLES, TEST_RESULTS
from app.services.resolution import KEY_SOURCES, REASONS

ProviderType = Literal[PROVIDER_TYPES]  # type: ignore[valid-type]
KeyPolicy = Literal[KEY_POLICIES]  # type: ignore[valid-type]
Role = Literal[ROLES]  # type: ignore[valid-type]
KeySource = Literal[KEY_SOURCES]  # type: ignore[valid-type]
Reason = Literal[REASONS]  # type: ignore[valid-type]
MemberSource = Literal[MEMBER_SOURCES]  # type: ignore[valid-type]
Access = Literal[ACCESS_MODES]  # type: ignore[valid-type]
# SPEC section 6a: what a key test (or a report) can find.
KeyTestOutcome = Literal[TEST_RESULTS]  # type: ignore[valid-type]

Timestamp = datetime  # RFC 3339 UTC, e.g. "2026-01-31T12:00:00.000000Z"


class Out(BaseModel):
    """Base of every response model: exactly these fields, of exactly these types."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Validation(Out):
    field: str
    detail: str


class Error(Out):
    """The error envelope of every 4xx and 5xx answer."""

    message: str
    detail: str | SkipJsonSchema[None] = None
    validations: list[Validation] | SkipJsonSchema[None] = None
    request_id: str | SkipJsonSchema[None] = Field(default=None, description="Only on 500: quote it to the operator.")


class Me(Out):
    id: uuid.UUID
    email: str
    name: str
    role: Role


class ProviderSummary(Out):
    id: uuid.UUID
    type: ProviderType
    name: str
    display_name: str = Field(description="Falls back to `name` when none was set.")
    enabled: bool


class Provider(ProviderSummary):
    base_url: str = Field(description="Empty: the type's default endpoint.")
    key_policy: KeyPolicy
    byok_enabled: bool
    has_provider_api_key: bool
    created_at: Timestamp
    updated_at: Timestamp


class ProviderKey(Out):
    id: uuid.UUID
    provider_id: uuid.UUID
    hint: str = Field(description='"..." and the last 4 characters; never the key.')
    created_at: Timestamp
    updated_at: Timestamp
    last_tested_at: Timestamp | None = Field(description="When the key was last tested or reported on; null until then.")
    last_test_result: KeyTestOutcome | None = Field(
        description="The latest result; `invalid_key` or `forbidden` mark the key failing (passed over).")


class UserKeyConfig(Out):
    provider: ProviderSummary
    has_user_api_key: bool
    has_provider_api_key: bool
    byok_enabled: bool
    hint: str | None = Field(description="The hint of the caller's key, null without one.")
    last_tested_at: Timestamp | None = Field(description="When the caller's key was last tested or reported on.")
    last_test_result: KeyTestOutcome | None = Field(
        description="The latest result for the caller's key; `invalid_key` or `forbidden`: refused, not used.")


class ModelConfig(Out):
    id: uuid.UUID
    ai_provider_id: uuid.UUID | None = Field(description="Null only for legacy configs.")
    provider: ProviderType
    model: str
    display_name: str
    enabled: bool
    is_default: bool
    context_limit: int
    compression_threshold: int
    options: dict[str, Any]
    access: Access = Field(description="`everyone`, or `groups`: only members of the groups in `group_ids` "
                                       "(none: no one) may use it.")
    group_ids: list[uuid.UUID] = Field(description="Ordered by group name; `[]` when `access` is `everyone`.")
    created_at: Timestamp
    updated_at: Timestamp


class Group(Out):
    id: uuid.UUID
    name: str
    display_name: str = Field(description="Falls back to `name` when none was set.")
    member_count: int
    created_at: Timestamp
    updated_at: Timestamp


class GroupMember(Out):
    user_id: uuid.UUID
    email: str
    name: str
    source: MemberSource = Field(description="`manual`: added by an administrator; `sso`: by the identity "
                                             "provider's groups claim, at sign-in.")
    added_at: Timestamp


class ResolutionProvider(Out):
    id: uuid.UUID
    type: ProviderType
    name: str
    display_name: str
    enabled: bool


class Resolution(Out):
    model_config_id: uuid.UUID
    provider: ResolutionProvider | None
    base_url: str | None
    key_source: KeySource | None
    available: bool
    reason: Reason | None


class Credentials(Resolution):
    key_id: uuid.UUID | None = Field(
        description="The stored key handed out (for POST /credentials/report); null with `api_key` null.")
    api_key: str | None = Field(description="The key in plaintext; null when none is available.")


class LegacyProvider(Out):
    id: uuid.UUID
    provider: ProviderType
    display_name: str
    enabled: bool
    base_url: str
    has_api_key: bool
    central_api_key_enabled: bool
    allow_user_api_key: bool
    allow_central_api_key_fallback: bool
    created_at: Timestamp
    updated_at: Timestamp


class UserProviderConfig(Out):
    provider_id: uuid.UUID
    provider: ProviderType
    display_name: str
    has_user_api_key: bool
    has_central_api_key_fallback: bool


class KeyTestResult(Out):
    result: KeyTestOutcome
    message: str


class ModelId(Out):
    id: str


class AuditEvent(Out):
    id: int = Field(description="Grows with every event: pass it as `before` to page on.")
    created_at: Timestamp
    actor_id: uuid.UUID | None = Field(description="The acting user; null for the CLI, the system or a service token.")
    actor_label: str
    action: str
    resource_type: str
    resource_id: str | None
    details: dict[str, Any] = Field(description="What changed; never a key, password or token.")
    request_id: str | None = Field(description="Ties the event to the server's log lines.")
    ip: str | None
