"""JSON routes for testing keys and discovering models (SPEC section 6a).

Every route that calls out to a provider shares one budget per user, `OUTBOUND_RATE_LIMIT`
(10 per minute), with the matching admin and settings pages: see `app/ratelimits.py`, which wraps
these views by endpoint name. Over it the answer is 429 and nothing is sent.
"""

from __future__ import annotations

from flask import jsonify

from app.api import bp
from app.api import responses as out
from app.api.auth import access, actor
from app.api.openapi import doc
from app.api.schemas import NoBody
from app.api.util import parse_body
from app.services import key_testing


@bp.post("/ai-providers/<provider_id>/keys/<key_id>/test")
@access("admin")
@doc("Test a provider key", body=NoBody, body_required=False, responses={200: out.KeyTestResult},
     errors=(409, 429))
def test_provider_key(provider_id: str, key_id: str):
    """Test one of a provider's keys: `{"result", "message"}`.

    :raise 400: malformed id, Bedrock, no base URL. :raise 404: provider or key not found.
    :raise 409: the stored key cannot be decrypted with the configured keys.
    :raise 429: over the per-user budget.
    """
    parse_body(NoBody, optional=True)
    return jsonify(key_testing.test_provider_key(actor(), provider_id, key_id).to_dict())


@bp.post("/user-ai-provider-keys/<provider_id>/test")
@access("user")
@doc("Test the caller's key for a provider", body=NoBody, body_required=False, responses={200: out.KeyTestResult},
     errors=(409, 429))
def test_user_key(provider_id: str):
    """Test the caller's own key for a provider: `{"result", "message"}`.

    :raise 403: BYOK is disabled. :raise 400: malformed id, disabled provider, provider that does
    not allow user keys, Bedrock. :raise 404: no live provider, or no key of the caller's.
    :raise 409: the stored key cannot be decrypted with the configured keys.
    """
    parse_body(NoBody, optional=True)
    return jsonify(key_testing.test_user_key(actor(), provider_id).to_dict())


@bp.get("/ai-providers/<provider_id>/models")
@access("admin")
@doc("Discover a provider's models", responses={200: list[out.ModelId]}, errors=(409, 429, 502, 504))
def list_provider_models(provider_id: str):
    """The models the provider serves, asked with the key that serves it (its oldest key the
    provider has not refused): `[{"id": str}]`, sorted.

    :raise 400: no key, Bedrock, no base URL. :raise 404: provider not found.
    :raise 409: that key cannot be decrypted with the configured keys.
    :raise 502: the provider gave no model list (`detail` is the result); 504 on a timeout.
    """
    return jsonify([{"id": model} for model in key_testing.discover_models(actor(), provider_id)])
