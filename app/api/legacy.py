"""Legacy chat providers (admins) and each user's own keys for them (SPEC section 6)."""

from __future__ import annotations

from flask import jsonify

from app.api import bp
from app.api import responses as out
from app.api.auth import access, actor
from app.api.openapi import doc
from app.api.schemas import LegacyProviderCreate, LegacyProviderUpdate, UserKeyBody
from app.api.serializers import legacy_provider_dict, legacy_user_config_dict
from app.api.util import listing, page_from_args, parse_body, sent_field
from app.services import legacy


@bp.get("/providers")
@access("admin")
@doc("List legacy chat providers", responses={200: list[out.LegacyProvider]}, paged=True)
def list_legacy_providers():
    """Every legacy chat provider, ordered by type."""
    providers, total = legacy.list_providers(page_from_args())
    return listing([legacy_provider_dict(p) for p in providers], total)


@bp.post("/providers")
@access("admin")
@doc("Create a legacy chat provider", body=LegacyProviderCreate, responses={201: out.LegacyProvider}, errors=(409,))
def create_legacy_provider():
    """:raise 400: invalid provider, policy or key. :raise 409: one of this type exists."""
    body, _ = parse_body(LegacyProviderCreate)
    provider = legacy.create_provider(actor(), **body.model_dump())
    return jsonify(legacy_provider_dict(provider)), 201


@bp.patch("/providers/<provider_id>")
@access("admin")
@doc("Update a legacy chat provider", body=LegacyProviderUpdate, responses={200: out.LegacyProvider}, errors=(409,))
def update_legacy_provider(provider_id: str):
    """:raise 404: "Chat provider not found." """
    body, sent = parse_body(LegacyProviderUpdate)
    provider = legacy.update_provider(actor(), provider_id, body.model_dump(include=sent))
    return jsonify(legacy_provider_dict(provider))


@bp.delete("/providers/<provider_id>")
@access("admin")
@doc("Delete a legacy chat provider", responses={204: None})
def delete_legacy_provider(provider_id: str):
    """Delete the provider, its key and every user's key for it. :raise 404:"""
    legacy.delete_provider(actor(), provider_id)
    return "", 204


@bp.get("/user-provider-configs")
@access("user")
@doc("List the caller's legacy provider configs", responses={200: list[out.UserProviderConfig]}, paged=True)
def list_user_provider_configs():
    """The caller's view of the legacy providers they may bring a key for."""
    configs, total = legacy.list_user_configs(actor().user_id, page_from_args())
    return listing([legacy_user_config_dict(c) for c in configs], total)


@bp.put("/user-provider-configs/<provider_id>")
@access("user")
@doc("Save the caller's key for a legacy provider", body=UserKeyBody, responses={200: out.UserProviderConfig})
def put_user_provider_config(provider_id: str):
    """Save the caller's key. The body is parsed only when the service reaches the key rules,
    so BYOK-off (403) and the provider checks come first.

    :raise 403: BYOK off. :raise 400: malformed id, disabled or not allowed, bad body or key.
    :raise 404: no such provider.
    """
    config = legacy.set_user_key(actor(), provider_id, sent_field(UserKeyBody, "api_key"))
    return jsonify(legacy_user_config_dict(config))


@bp.delete("/user-provider-configs/<provider_id>")
@access("user")
@doc("Delete the caller's key for a legacy provider", responses={204: None})
def delete_user_provider_config(provider_id: str):
    """Remove the caller's key; idempotent."""
    legacy.delete_user_key(actor(), provider_id)
    return "", 204
