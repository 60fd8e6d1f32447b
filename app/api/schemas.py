"""Request bodies of the provider routes: shape only.

Every field is optional so that a missing or empty value reaches the service, which answers with
the message of the spec (a missing `type` is "Invalid AI provider type.", a missing `api_key` is
"API key is required."). Values of the wrong JSON type and unknown fields are refused here with
"Invalid request body." and a validation naming the field. `UserKeyBody` serves both user-key
routes (AI providers and legacy chat providers).
"""

from __future__ import annotations

from app.api.util import Body


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
