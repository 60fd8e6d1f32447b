"""Request parsing and response shaping shared by every JSON route."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import jsonify, request
from pydantic import BaseModel, ConfigDict, ValidationError

from app.db import rfc3339
from app.errors import InvalidInput, Validation
from app.services.base import Page

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """Base of every request body: unknown fields are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


def parse_body(schema: type[M], *, optional: bool = False) -> tuple[M, set[str]]:
    """Validate the JSON body against `schema`; returns the model and the fields that were sent.
    With `optional`, no body at all is the schema's defaults (routes whose body may be left out).

    :raise InvalidInput: not a JSON object, an unknown field, or a field of the wrong type.
    """
    if optional and not request.get_data(cache=True):
        return schema(), set()
    if not request.data:  # empty, or a form (Werkzeug parses those into request.form)
        raise InvalidInput("Request body must be valid JSON.")
    try:
        # Decoded once, by pydantic, and validated as JSON, still strict: a UUID, datetime or enum
        # field takes its JSON string, while "5" is no integer and 1 is no boolean.
        model = schema.model_validate_json(request.get_data())
    except ValidationError as error:
        if not _is_json_object():
            raise InvalidInput("Request body must be valid JSON.") from None
        validations = []
        for item in error.errors():
            field = ".".join(str(p) for p in item["loc"]) or "body"
            detail = "Unknown field." if item["type"] == "extra_forbidden" else item["msg"]
            validations.append(Validation(field, detail))
        raise InvalidInput("Invalid request body.", validations=validations) from None
    # extra="forbid" and no aliases: the fields set are exactly the keys that were sent.
    return model, set(model.model_fields_set)


def try_parse_body(schema: type[M]) -> tuple[M, set[str]] | InvalidInput:
    """`parse_body`, with its error returned instead of raised: for the routes whose service
    refuses a bad body at a later step of the SPEC's order of checks (see `app.errors.unwrap`)."""
    try:
        return parse_body(schema)
    except InvalidInput as error:
        return error


def sent_field(schema: type[BaseModel], field: str) -> Any:
    """One field of the body as sent, or the `InvalidInput` that parsing the body raised."""
    parsed = try_parse_body(schema)
    return parsed if isinstance(parsed, InvalidInput) else getattr(parsed[0], field)


def _is_json_object() -> bool:
    """Whether the body is a JSON object to Flask's decoder (any content type). Asked only once
    validation has failed, to tell a body that is no JSON object from one with a bad field (a
    lone surrogate escape, which pydantic refuses, is the latter)."""
    try:
        return isinstance(request.get_json(silent=True, force=True), dict)
    except RecursionError:  # nested deeper than the decoder goes: it was a 500
        return False


def parse_query(schema: type[M]) -> M:
    """Validate the query string against `schema` (values converted from text: "5" is 5).

    :raise InvalidInput: "Invalid query parameter." naming an unknown, repeated or malformed parameter.
    """
    validations = [Validation(name, "Give this parameter once.") for name in request.args
                   if len(request.args.getlist(name)) > 1]
    if not validations:
        try:
            return schema.model_validate(request.args.to_dict(), strict=False)
        except ValidationError as error:
            for item in error.errors():
                field = ".".join(str(p) for p in item["loc"]) or "query"
                validations.append(Validation(field, "Unknown query parameter." if item["type"] == "extra_forbidden"
                                              else item["msg"]))
    raise InvalidInput("Invalid query parameter.", validations=validations)


LIMIT_MAX = 1000
OFFSET_MAX = 2**63 - 1  # the databases' 64-bit integer: a larger OFFSET fails in PostgreSQL


def page_from_args() -> Page:
    """`limit` (1..1000) and `offset` (0..2^63-1) from the query string. :raise InvalidInput:"""
    limit = _int_arg("limit", 1, LIMIT_MAX)
    offset = _int_arg("offset", 0, OFFSET_MAX) or 0
    return Page(limit=limit, offset=offset)


def _int_arg(name: str, low: int, high: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidInput("Invalid query parameter.", validations=[Validation(name, f"Must be an integer {bounds}.")])
    return value


def listing(items: list[Any], total: int):
    response = jsonify(items)
    response.headers["X-Total-Count"] = str(total)
    return response


timestamp = rfc3339  # the API's timestamps (app.db.rfc3339)
