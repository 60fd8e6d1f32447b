"""JSON routes for AI providers and their keys (SPEC section 4). Admins only.

Each view parses, calls one service function and shapes the answer; every rule and every
error message lives in `app.services.providers`.
"""

from __future__ import annotations

from flask import jsonify

from app.api import bp
from app.api import responses as out
from app.api.auth import access, actor
from app.api.openapi import doc
from app.api.schemas import ProviderCreate, ProviderKeyCreate, ProviderUpdate
from app.api.serializers import key_dict, provider_dict
from app.api.util import listing, page_from_args, parse_body
from app.models import AIProvider
from app.services import provider_keys
from app.services import providers as service


def _with_facts(provider: AIProvider) -> dict:
    facts = service.provider_facts([provider.id]).get(provider.id, service.ProviderFacts())
    return provider_dict(provider, facts)


@bp.get("/ai-providers")
@access("admin")
@doc("List AI providers", responses={200: list[out.Provider]}, paged=True)
def list_ai_providers():
    """Live providers, disabled included, ordered by name; `limit`/`offset`, total in X-Total-Count."""
    providers, total = service.list_providers(page_from_args())
    facts = service.provider_facts([p.id for p in providers])
    return listing([provider_dict(p, facts.get(p.id, service.ProviderFacts())) for p in providers], total)


@bp.post("/ai-providers")
@access("admin")
@doc("Create an AI provider", body=ProviderCreate, responses={201: out.Provider}, errors=(409,))
def create_ai_provider():
    """Register a provider. :raise 400: a field breaks its rule. :raise 409: the name is taken."""
    body, _ = parse_body(ProviderCreate)
    provider = service.create_provider(actor(), **body.model_dump())
    return jsonify(provider_dict(provider, service.ProviderFacts())), 201


@bp.get("/ai-providers/<provider_id>")
@access("admin")
@doc("Get an AI provider", responses={200: out.Provider})
def get_ai_provider(provider_id: str):
    """:raise 400: malformed id. :raise 404: missing or deleted."""
    return jsonify(_with_facts(service.get_provider(provider_id)))


@bp.patch("/ai-providers/<provider_id>")
@access("admin")
@doc("Update an AI provider", body=ProviderUpdate, responses={200: out.Provider}, errors=(409,))
def update_ai_provider(provider_id: str):
    """Change the fields that were sent. :raise 400: `type` or a bad value. :raise 404: :raise 409: name taken."""
    body, sent = parse_body(ProviderUpdate)
    provider = service.update_provider(actor(), provider_id, {field: getattr(body, field) for field in sent})
    return jsonify(_with_facts(provider))


@bp.delete("/ai-providers/<provider_id>")
@access("admin")
@doc("Delete an AI provider", responses={204: None})
def delete_ai_provider(provider_id: str):
    """Soft-delete the provider; its keys, users' keys and model configs go with it. :raise 404:"""
    service.delete_provider(actor(), provider_id)
    return "", 204


@bp.get("/ai-providers/<provider_id>/keys")
@access("admin")
@doc("List a provider's keys", responses={200: list[out.ProviderKey]}, paged=True)
def list_ai_provider_keys(provider_id: str):
    """The provider's keys (hints only), oldest first. :raise 404: unknown provider."""
    keys, total = provider_keys.page_keys(provider_id, page_from_args())
    return listing([key_dict(k) for k in keys], total)


@bp.post("/ai-providers/<provider_id>/keys")
@access("admin")
@doc("Add a key to a provider", body=ProviderKeyCreate, responses={201: out.ProviderKey}, errors=(409,))
def create_ai_provider_key(provider_id: str):
    """Store a key (encrypted); the answer shows only its hint. :raise 400: :raise 404: :raise 409: duplicate."""
    body, _ = parse_body(ProviderKeyCreate)
    key = provider_keys.add_key(actor(), provider_id, body.api_key)
    return jsonify(key_dict(key)), 201


@bp.delete("/ai-providers/<provider_id>/keys/<key_id>")
@access("admin")
@doc("Delete a provider key", responses={204: None})
def delete_ai_provider_key(provider_id: str, key_id: str):
    """:raise 404: "AI provider key not found." when missing or it belongs to another provider."""
    provider_keys.delete_key(actor(), provider_id, key_id)
    return "", 204
