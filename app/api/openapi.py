"""The OpenAPI 3.1 description of the JSON API, built from the routes themselves.

Each view carries its own metadata with `@doc(...)`: a summary, the pydantic model of its request
body (the one `parse_body` validates with), the models of its success responses
(`app.api.responses`), the error statuses it may answer besides the ones every route shares, and
whether it is a paged list. `build_spec(app)` walks `app.url_map` and describes every route under
the API prefix from that metadata, the route's `@access` level and its path arguments; a route
without `@doc` is an error (`UndocumentedRoute`), so the description cannot leave one out.

So that it cannot drift either, in TESTING mode every response of the API is checked against what
its route declares (`check_response`, an `after_request` hook on the API blueprint): a 2xx status
the route does not declare, or a body that does not match its model, raises; so does an error
status the route does not declare (500 excepted) or an error body outside the envelope. Every
test of the API therefore also tests the description.

Routes share these answers, so `@doc` need not list them: 401 and 403 (unless public), 400 (unless
a GET without path, query or body input could not fail), 404 on routes with an id in the path,
413 on routes with a body, 503 everywhere (database unavailable, with Retry-After).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Flask, Response, current_app, request
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from app.api import bp
from app.api import responses as out
from app.api.util import LIMIT_MAX, OFFSET_MAX

API_PREFIX = "/api/experimental/chats"
OPENAPI_VERSION = "3.1.0"
IGNORED_METHODS = frozenset(("HEAD", "OPTIONS"))
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
REF = "#/components/schemas/{model}"

ERROR_DESCRIPTIONS = {
    400: "Invalid input: a malformed id, query parameter or body, a rule of the field broken, or a missing "
         "CSRF token (session cookie requests).",
    401: 'Not authenticated: `{"message": "Unauthorized."}`.',
    403: 'Authenticated but not allowed: `{"message": "Forbidden."}` (or a rule of the route, e.g. BYOK off).',
    404: "The resource does not exist (or was deleted).",
    409: "Conflict with what exists (a duplicate, or a concurrent change that won).",
    413: "Request body too large (64 KiB at most).",
    429: "Too many requests: wait for `Retry-After` seconds.",
    500: 'Internal error: `{"message": "Internal error.", "request_id": "..."}`; nothing else is disclosed.',
    502: "The provider gave no usable answer; `detail` is the result.",
    503: "The database is unavailable; nothing was written. Retry after `Retry-After` seconds.",
    504: "The provider did not answer in time; `detail` is the result.",
}
SUCCESS_DESCRIPTIONS = {200: "OK.", 201: "Created.", 204: "Done; no body."}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                               "schema": {"type": "string"}}}
NEXT_LINK = {"Link": {"description": 'The next page: `<URL>; rel="next"`, absent on the last page.',
                      "required": False, "schema": {"type": "string"}}}
TOTAL_COUNT = {"X-Total-Count": {"description": "How many items the whole list holds (before limit/offset).",
                                 "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
TAGS = {
    "me": "Me",
    "providers": "AI providers",
    "user_keys": "User keys (BYOK)",
    "model_configs": "Model configs and credentials",
    "groups": "Groups",
    "key_tests": "Key tests and model discovery",
    "legacy": "Legacy chat providers",
    "audit": "Audit log",
}
ACCESS_NOTES = {
    "public": "Anyone, without authentication.",
    "user": "Any signed-in user (not service tokens).",
    "admin": "Administrators only.",
    "service": "Service tokens only.",
}
_PATH_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class UndocumentedRoute(RuntimeError):
    """A route under the API prefix has no `@doc`: the description would be incomplete."""


class ResponseDrift(AssertionError):
    """TESTING only: a response does not match what its route declares."""


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, Any]
    body: type[BaseModel] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()
    paged: bool = False
    description: str = field(default="")
    query: type[BaseModel] | None = None
    keyset: bool = False


def doc(summary: str, *, responses: Mapping[int, Any], body: type[BaseModel] | None = None,
        body_required: bool = True, errors: tuple[int, ...] = (), paged: bool = False,
        query: type[BaseModel] | None = None, keyset: bool = False) -> Callable:
    """Describe a view: `responses` maps each success status to a model, `list[Model]` or None
    (no body); `errors` lists statuses beyond the shared ones (see the module docstring).
    `paged`: `limit`/`offset` and `X-Total-Count`; `query`: the model of its query parameters
    (validated by `util.parse_query`); `keyset`: the next page's URL is in a `Link` header."""

    def mark(view: Callable) -> Callable:
        view.openapi = Operation(summary=summary, responses=dict(responses), body=body,
                                 body_required=body_required, errors=tuple(errors), paged=paged,
                                 description=inspect.cleandoc(view.__doc__ or ""), query=query, keyset=keyset)
        return view

    return mark


# --- building the description ------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    path: str  # OpenAPI form: /api/experimental/chats/ai-providers/{provider_id}
    method: str
    endpoint: str
    view: Callable
    arguments: tuple[str, ...]

    @property
    def operation(self) -> Operation:
        return self.view.openapi

    @property
    def access(self) -> str:
        return getattr(self.view, "access", "user")


def api_routes(app: Flask) -> Iterator[Route]:
    """Every (path, method) under the API prefix, in a stable order. :raise UndocumentedRoute:"""
    found = []
    for rule in app.url_map.iter_rules():
        if not (rule.rule == API_PREFIX or rule.rule.startswith(API_PREFIX + "/")):
            continue
        view = app.view_functions[rule.endpoint]
        path = _PATH_ARG.sub(r"{\1}", rule.rule)
        arguments = tuple(_PATH_ARG.findall(rule.rule))
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            if not isinstance(getattr(view, "openapi", None), Operation):
                raise UndocumentedRoute(f"{method} {rule.rule} ({rule.endpoint}) has no @doc description.")
            found.append(Route(path, method, rule.endpoint, view, arguments))
    return iter(sorted(found, key=lambda r: (r.path, r.method)))


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `app`'s JSON API. :raise UndocumentedRoute:"""
    routes = list(api_routes(app))
    models = _models(routes)
    keys, definitions = models_json_schema([(model, mode) for model, mode in models], ref_template=REF)

    def schema_of(model: Any, mode: str) -> dict[str, Any]:
        if typing.get_origin(model) is list:
            return {"type": "array", "items": schema_of(typing.get_args(model)[0], mode)}
        return keys[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Switchboard API",
            "version": "experimental",
            "description": (
                "Which AI providers and models an organisation's chat users may use, and with whose key. "
                "Authenticate with `Authorization: Bearer <token>` (tokens are made at /settings/tokens), or "
                "from the browser with the session cookie plus an `X-CSRFToken` header on unsafe methods. "
                "Ids are UUIDs; timestamps are RFC 3339 UTC strings; lists take `limit` (1..1000) and "
                "`offset` and report the total in `X-Total-Count`. Every answer carries `X-Request-ID`. "
                "Errors share one envelope (`Error`); a 500 answers only "
                '`{"message": "Internal error.", "request_id": "..."}`. No answer ever contains a stored key, '
                "except the plaintext `api_key` that `POST /credentials` hands to service tokens."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in sorted(dict.fromkeys(_tag(route) for route in routes), key=_tag_order)],
        "paths": paths,
        "components": {
            "schemas": {name: _without_null_defaults(schema) for name, schema in definitions.get("$defs", {}).items()},
            "securitySchemes": {
                "bearerToken": {"type": "http", "scheme": "bearer",
                                "description": "An API token from /settings/tokens (or `flask tokens create`)."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": app.config["SESSION_COOKIE_NAME"],
                                  "description": "The browser session of a signed-in user."},
                "csrfToken": {"type": "apiKey", "in": "header", "name": "X-CSRFToken",
                              "description": "With the session cookie, on POST, PUT, PATCH and DELETE: the "
                                             "token from the page's `csrf-token` meta tag."},
            },
        },
    }


def _without_null_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop `"default": null` from properties that may not be null (optional, absent when unset)."""
    properties = {}
    for name, prop in schema.get("properties", {}).items():
        if prop.get("default", ...) is None and "type" in prop and prop["type"] != "null":
            prop = {k: v for k, v in prop.items() if k != "default"}
        properties[name] = prop
    return {**schema, "properties": properties} if "properties" in schema else schema


def spec_for(app: Flask) -> dict[str, Any]:
    """The description, built once per app."""
    spec = app.extensions.get("switchboard.openapi")
    if spec is None:
        spec = app.extensions["switchboard.openapi"] = build_spec(app)
    return spec


def _models(routes: list[Route]) -> list[tuple[type[BaseModel], str]]:
    wanted: dict[tuple[type[BaseModel], str], None] = {(out.Error, "serialization"): None}
    for route in routes:
        if route.operation.body is not None:
            wanted[(route.operation.body, "validation")] = None
        for model in route.operation.responses.values():
            while typing.get_origin(model) is list:
                model = typing.get_args(model)[0]
            if model is not None:
                wanted[(model, "serialization")] = None
    return list(wanted)


def error_statuses(route: Route) -> list[int]:
    """Every error status the route may answer (500 aside)."""
    op = route.operation
    statuses = {503, *op.errors}
    if route.access != "public":
        statuses |= {401, 403}
    if route.arguments or op.paged or op.query or op.body is not None or route.method not in SAFE_METHODS:
        statuses.add(400)
    if route.arguments:
        statuses.add(404)
    if op.body is not None:
        statuses.add(413)
    return sorted(statuses)


def _operation(route: Route, schema_of: Callable[[Any, str], dict[str, Any]]) -> dict[str, Any]:
    op = route.operation
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "description": "A UUID; a malformed one is 400.",
         "schema": {"type": "string", "format": "uuid"}}
        for name in route.arguments
    ]
    if op.paged:
        parameters += [
            {"name": "limit", "in": "query", "required": False,
             "description": f"At most this many items (1..{LIMIT_MAX}).",
             "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX}},
            {"name": "offset", "in": "query", "required": False, "description": "Skip this many items first.",
             "schema": {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX}},
        ]
    if op.query is not None:
        for name, prop in op.query.model_json_schema()["properties"].items():
            schema = {k: v for k, v in prop.items() if k not in ("title", "default", "description")}
            if "anyOf" in schema:  # `X | None`: the parameter is optional, never null
                schema = next(s for s in schema.pop("anyOf") if s.get("type") != "null") | schema
            parameters.append({"name": name, "in": "query", "required": False, "schema": schema,
                               "description": prop.get("description", "")})
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        answer: dict[str, Any] = {"description": SUCCESS_DESCRIPTIONS.get(status, "Success.")}
        if model is not None:
            answer["content"] = {"application/json": {"schema": schema_of(model, "serialization")}}
        if op.paged and typing.get_origin(model) is list:
            answer["headers"] = TOTAL_COUNT
        if op.keyset:
            answer["headers"] = NEXT_LINK
        responses[str(status)] = answer
    for status in error_statuses(route):
        answer = {"description": ERROR_DESCRIPTIONS.get(status, "Error."),
                  "content": {"application/json": {"schema": schema_of(out.Error, "serialization")}}}
        if status in (429, 503):
            answer["headers"] = RETRY_AFTER
        responses[str(status)] = answer
    description = op.description
    note = ACCESS_NOTES[route.access]
    operation: dict[str, Any] = {
        "operationId": route.endpoint.split(".", 1)[-1],
        "summary": op.summary,
        "description": f"{description}\n\nWho: {note}" if description else f"Who: {note}",
        "tags": [_tag(route)],
        "parameters": parameters,
        "responses": responses,
        "security": _security(route),
        "x-access": route.access,
    }
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schema_of(op.body, "validation")}},
        }
    return operation


def _security(route: Route) -> list[dict[str, list]]:
    if route.access == "public":
        return []
    if route.access == "service":
        return [{"bearerToken": []}]
    cookie = {"sessionCookie": []} if route.method in SAFE_METHODS else {"sessionCookie": [], "csrfToken": []}
    return [{"bearerToken": []}, cookie]


def _tag_order(name: str) -> tuple[int, str]:
    order = list(TAGS.values())
    return (order.index(name) if name in order else len(order), name)


def _tag(route: Route) -> str:
    module = route.view.__module__.rsplit(".", 1)[-1]
    return TAGS.get(module, module.replace("_", " ").capitalize())


# --- keeping it honest (TESTING only) ----------------------------------------------------------


@cache
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)


@bp.after_request
def check_response(response: Response) -> Response:
    """In TESTING mode, refuse a response that its route's `@doc` does not describe."""
    if not current_app.config.get("TESTING") or request.method in IGNORED_METHODS:
        return response
    view = current_app.view_functions.get(request.endpoint or "")
    op = getattr(view, "openapi", None)
    if op is None:  # no route matched (404/405 from routing); an undocumented route fails build_spec
        return response
    status = response.status_code
    label = f"{request.method} {request.url_rule.rule if request.url_rule else request.path} answered {status}"
    if 200 <= status < 300:
        if status not in op.responses:
            raise ResponseDrift(f"{label}, which its @doc does not declare ({sorted(op.responses)}).")
        model = op.responses[status]
        if model is None:
            if response.get_data():
                raise ResponseDrift(f"{label} with a body; its @doc declares none.")
            return response
        _validate(label, model, response)
        return response
    if status >= 400:
        route = Route("", request.method, request.endpoint or "", view, tuple((request.view_args or {}).keys()))
        if status != 500 and status not in error_statuses(route):
            raise ResponseDrift(f"{label}, which its @doc does not declare ({error_statuses(route)}).")
        _validate(label, out.Error, response)
    return response


def _validate(label: str, model: Any, response: Response) -> None:
    if not response.is_json:
        raise ResponseDrift(f"{label} with {response.mimetype}, not JSON.")
    try:
        _adapter(model).validate_json(response.get_data())
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ResponseDrift(f"{label} with a body that does not match {model}: {error}") from None
