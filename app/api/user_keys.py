"""JSON routes for the caller's own provider keys (SPEC section 5): always the caller's keys."""

from __future__ import annotations

from flask import jsonify

from app.api import bp
from app.api import responses as out
from app.api.auth import access, actor
from app.api.openapi import doc
from app.api.schemas import UserKeyBody
from app.api.serializers import user_key_config_dict
from app.api.util import listing, page_from_args, sent_field
from app.services import user_keys


@bp.get("/user-ai-provider-keys")
@access("user")
@doc("List the caller's provider keys", responses={200: list[out.UserKeyConfig]}, paged=True)
def list_user_keys():
    """The caller's key configs, ordered by provider name (`limit`, `offset`, `X-Total-Count`)."""
    configs, total = user_keys.list_user_keys(actor(), page_from_args())
    return listing([user_key_config_dict(c) for c in configs], total)


@bp.put("/user-ai-provider-keys/<provider_id>")
@access("user")
@doc("Save the caller's key for a provider", body=UserKeyBody, responses={200: out.UserKeyConfig})
def put_user_key(provider_id: str):
    """Save the caller's key for a provider. The body is parsed only when the service reaches
    the key rules, so BYOK-off (403) and the provider checks come first.

    :raise 403: BYOK is disabled. :raise 400: malformed id, disabled provider, provider that
    does not allow user keys, bad body or key. :raise 404: no live provider.
    """
    config = user_keys.upsert_user_key(actor(), provider_id, sent_field(UserKeyBody, "api_key"))
    return jsonify(user_key_config_dict(config))


@bp.delete("/user-ai-provider-keys/<provider_id>")
@access("user")
@doc("Delete the caller's key for a provider", responses={204: None})
def delete_user_key(provider_id: str):
    """Delete the caller's key for a provider; 204 whether or not one existed. :raise 400: malformed id."""
    user_keys.delete_user_key(actor(), provider_id)
    return "", 204
