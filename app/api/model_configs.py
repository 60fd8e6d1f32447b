"""JSON routes for chat model configs, key resolution and credential hand-outs (SPEC sections 6
and 9). Who may use a config (`access`, `group_ids`) is part of every config answer."""

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
from app.models import ChatModelConfig
from app.services import key_health
from app.services import model_configs as service
from app.services import resolution as resolution_service


def _answers(configs: list[ChatModelConfig]) -> list[dict]:
    """The configs as answered, with their groups (read in at most one query)."""
    group_ids = service.group_ids_by_config(configs)
    return [model_config_dict(c, group_ids) for c in configs]


@bp.get("/model-configs")
@access("user")
@doc("List model configs", responses={200: list[out.ModelConfig]}, paged=True)
def list_model_configs():
    """Admins: every live config, with who may use it. Members: their enabled set."""
    configs, total = service.list_visible(actor(), page_from_args())
    return listing(_answers(configs), total)


@bp.get("/model-configs/enabled")
@access("user")
@doc("List the enabled model configs", responses={200: list[out.ModelConfig]}, paged=True)
def list_enabled_model_configs():
    """The caller's enabled set: the configs they may pick now (admins too use only the configs
    open to them), the default first."""
    configs, total = service.list_enabled(actor().user_id, page_from_args())
    return listing(_answers(configs), total)


@bp.post("/model-configs")
@access("admin")
@doc("Create a model config", body=ModelConfigCreate, responses={201: out.ModelConfig}, errors=(404, 409))
def create_model_config():
    """`access` (default `everyone`) and `group_ids` say who may use it. :raise 400: a bad field,
    "Invalid model access.", "Group not found." :raise 404: unknown provider. :raise 409: duplicate."""
    body, sent = parse_body(ModelConfigCreate)
    config = service.create_config(actor(), **{f: getattr(body, f) for f in sent})
    return jsonify(_answers([config])[0]), 201


@bp.get("/model-configs/<config_id>")
@access("user")
@doc("Get a model config", responses={200: out.ModelConfig})
def get_model_config(config_id: str):
    """Admins: any live config. Members: a config of their enabled set. :raise 404:"""
    return jsonify(_answers([service.get_visible(actor(), config_id)])[0])


@bp.patch("/model-configs/<config_id>")
@access("admin")
@doc("Update a model config", body=ModelConfigUpdate, responses={200: out.ModelConfig}, errors=(409,))
def update_model_config(config_id: str):
    """Change the fields sent. `group_ids` alone replaces the groups of a config open to groups;
    `access: "everyone"` clears them. :raise 400: :raise 404: :raise 409:"""
    body, sent = parse_body(ModelConfigUpdate)
    config = service.update_config(actor(), config_id, {f: getattr(body, f) for f in sent})
    return jsonify(_answers([config])[0])


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
    """Which provider, base URL and whose key would serve the caller; never the key itself. A
    config the caller may not use: `available: false`, `reason: "model_not_allowed"`."""
    return jsonify(resolution_dict(resolution_service.resolve(actor().user, config_id)))


@bp.post("/credentials")
@access("service")
@doc("Hand out credentials for a user", body=CredentialsRequest, responses={200: out.Credentials},
     errors=(404, 409))
def hand_out_credentials():
    """Service tokens only: the resolution for a user plus the key in plaintext. Every call is
    audited, refused ones included: the body is parsed inside the audited transaction.

    `api_key` is null when no key is available (a user who may not use the config gets the
    resolution `model_not_allowed`, audited with that reason), and for a legacy AWS Bedrock
    provider served by its central credential (`key_source: "provider"`): Bedrock uses the AWS
    credentials configured in the chat backend.

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
