"""JSON routes for chat model configs, key resolution and credential hand-outs (SPEC section 6)."""

from __future__ import annotations

from flask import jsonify

from app.api import bp
from app.api import responses as out
from app.api.auth import access, actor
from app.api.openapi import doc
from app.api.schemas import CredentialsReport, CredentialsRequest, ModelConfigCreate, ModelConfigUpdate
from app.api.serializers import credentials_dict, model_config_dict, resolution_dict
from app.api.util import listing, page_from_args, parse_body, try_parse_body
from app.errors import DomainError
from app.services import key_health
from app.services import model_configs as service
from app.services import resolution as resolution_service


@bp.get("/model-configs")
@access("user")
@doc("List model configs", responses={200: list[out.ModelConfig]}, paged=True)
def list_model_configs():
    """Admins: every live config. Members: the enabled set."""
    configs, total = service.list_visible(actor(), page_from_args())
    return listing([model_config_dict(c) for c in configs], total)


@bp.get("/model-configs/enabled")
@access("user")
@doc("List the enabled model configs", responses={200: list[out.ModelConfig]}, paged=True)
def list_enabled_model_configs():
    """The enabled set: the configs chat users may pick now, the default first."""
    configs, total = service.list_enabled(page_from_args())
    return listing([model_config_dict(c) for c in configs], total)


@bp.post("/model-configs")
@access("admin")
@doc("Create a model config", body=ModelConfigCreate, responses={201: out.ModelConfig}, errors=(404, 409))
def create_model_config():
    body, sent = parse_body(ModelConfigCreate)
    config = service.create_config(actor(), **{f: getattr(body, f) for f in sent})
    return jsonify(model_config_dict(config)), 201


@bp.get("/model-configs/<config_id>")
@access("user")
@doc("Get a model config", responses={200: out.ModelConfig})
def get_model_config(config_id: str):
    """Admins: any live config. Members: a config of the enabled set. :raise 404:"""
    return jsonify(model_config_dict(service.get_visible(actor(), config_id)))


@bp.patch("/model-configs/<config_id>")
@access("admin")
@doc("Update a model config", body=ModelConfigUpdate, responses={200: out.ModelConfig}, errors=(409,))
def update_model_config(config_id: str):
    body, sent = parse_body(ModelConfigUpdate)
    config = service.update_config(actor(), config_id, {f: getattr(body, f) for f in sent})
    return jsonify(model_config_dict(config))


@bp.delete("/model-configs/<config_id>")
@access("admin")
@doc("Delete a model config", responses={204: None})
def delete_model_config(config_id: str):
    service.delete_config(actor(), config_id)
    return "", 204


@bp.get("/model-configs/<config_id>/resolution")
@access("user")
@doc("Resolve a model config for the caller", responses={200: out.Resolution})
def get_model_config_resolution(config_id: str):
    """Which provider, base URL and whose key would serve the caller; never the key itself."""
    return jsonify(resolution_dict(resolution_service.resolve(actor().user, config_id)))


@bp.post("/credentials")
@access("service")
@doc("Hand out credentials for a user", body=CredentialsRequest, responses={200: out.Credentials},
     errors=(404, 409))
def hand_out_credentials():
    """Service tokens only: the resolution for a user plus the key in plaintext. Every call is
    audited, refused ones included: the body is parsed inside the audited transaction.

    `api_key` is null when no key is available, and for a legacy AWS Bedrock provider served by
    its central credential (`key_source: "provider"`): Bedrock uses the AWS credentials
    configured in the chat backend.

    :raise 400: a bad body or malformed id. :raise 404: unknown or deactivated user, unknown
    config. :raise 409: the stored key cannot be decrypted with the configured keys.
    """
    parsed = try_parse_body(CredentialsRequest)
    ask = parsed if isinstance(parsed, DomainError) else (parsed[0].user_id, parsed[0].model_config_id)
    return jsonify(credentials_dict(resolution_service.hand_out_credentials(actor(), ask)))


@bp.post("/credentials/report")
@access("service")
@doc("Report how a handed-out key fared", body=CredentialsReport, responses={204: None}, errors=(404,))
def report_credentials():
    """Service tokens only: the chat backend reports the provider's answer to a key it was handed
    (`key_id` from `POST /credentials`). `invalid_key` or `forbidden` marks the key failing, so
    resolution passes over it (the next oldest shared key serves; a failing user key counts as
    absent); `ok` clears that. Audited as `credentials.report`.

    :raise 400: a malformed body or key id, a result other than ok, invalid_key, forbidden.
    :raise 404: "API key not found." (no key has this id, e.g. it was deleted).
    """
    body, _ = parse_body(CredentialsReport)
    key_health.report(actor(), body.key_id, body.result)
    return "", 204
