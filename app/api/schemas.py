"""Every request body of the JSON API: shape only.

Every field is optional so that a missing or empty value reaches the service, which answers with
the message of the spec (a missing `type` is "Invalid AI provider type.", a missing `api_key` is
"API key is required."). Values of the wrong JSON type and unknown fields are refused here with
"Invalid request body." and a validation naming the field. `UserKeyBody` serves both user-key
routes (AI providers and legacy chat providers).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.api.util import LIMIT_MAX, Body


class _ProviderFields(Body):
    type: str | None = None
    name: str | None = None
    display_name: str | None = None
    enabled: bool | None = None
    base_url: str | None = None
    key_policy: str | None = None


class ProviderCreate(_ProviderFields):
    pass


class ProviderUpdate(_ProviderFields):
    # `type` is part of the shape only so the service can refuse it by name: it is immutable.
    pass


class UserKeyBody(Body):
    # The caller's own key, for an AI provider or a legacy chat provider. Optional here so that a
    # missing or null key gets the service's "API key is required."
    api_key: str | None = None


class ProviderKeyCreate(Body):
    api_key: str | None = None


class _ModelConfigFields(Body):
    # Required fields are optional and numbers/options untyped here: the service checks them and
    # answers with the SPEC's own messages. On update, `ai_provider_id` and `provider` are
    # accepted (of any type) so the service can say they cannot change.
    ai_provider_id: Any = None
    provider: Any = None
    model: str | None = None
    display_name: str | None = None
    enabled: bool | None = None
    is_default: bool | None = None
    context_limit: Any = None
    compression_threshold: Any = None
    options: Any = None
    # Untyped too, so a bad value gets the service's "Invalid model access." naming the field.
    access: Any = None
    group_ids: Any = None


class ModelConfigCreate(_ModelConfigFields):
    ai_provider_id: str | None = None
    provider: str | None = None


class ModelConfigUpdate(_ModelConfigFields):
    pass


class _GroupFields(Body):
    name: str | None = None
    display_name: str | None = None


class GroupCreate(_GroupFields):
    pass


class GroupUpdate(_GroupFields):
    pass


class CredentialsRequest(Body):
    user_id: str
    model_config_id: str


class LegacyProviderUpdate(Body):
    display_name: str | None = None
    enabled: bool | None = None
    base_url: str | None = None
    central_api_key_enabled: bool | None = None
    allow_user_api_key: bool | None = None
    allow_central_api_key_fallback: bool | None = None
    api_key: str | None = None


class LegacyProviderCreate(LegacyProviderUpdate):
    # Optional in shape so that a missing or null type gets the service's "Invalid provider."
    provider: str | None = None


class NoBody(Body):
    """These routes take no body; one that is sent may not carry fields."""


class CredentialsReport(Body):
    key_id: str
    result: Literal["ok", "invalid_key", "forbidden"]


class AuditEventsQuery(Body):
    """The query string of GET /audit-events (not a body: validated by `parse_query`)."""

    limit: int | None = Field(default=None, ge=1, le=LIMIT_MAX, description=f"At most this many events (1..{LIMIT_MAX}, "
                              "default 100).")
    before: int | None = Field(default=None, ge=1, le=2**63 - 1,
                               description="Only events older than this event id: the `Link` header's next page.")
    actor: str | None = Field(default=None, description="A user id, or part of the actor's email or label.")
    action: str | None = Field(default=None, description="An action (`auth.login`) or its first segments (`user`).")
    resource_type: str | None = Field(default=None, description="A resource type, e.g. `ai_provider`.")
    resource_id: str | None = Field(default=None, description="A resource id (with `resource_type`).")
    since: str | None = Field(default=None, description="RFC 3339; events at or after this moment.",
                              json_schema_extra={"format": "date-time"})
    until: str | None = Field(default=None, description="RFC 3339; events before this moment.",
                              json_schema_extra={"format": "date-time"})
