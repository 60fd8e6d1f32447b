"""`GET /api/openapi.json` and `GET /api/docs`: the API's description and a page that renders it.

They belong to the API package (its `docs_bp`, mounted at /api), beside the description they serve.

Both are public (the description holds no data) and both come from the one document that
`app.api.openapi.spec_for` builds, so the page cannot say something the JSON does not. The page is
rendered on the server from the app's own template and stylesheet: no CDN, no script.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify, render_template

from app.api import docs_bp as bp
from app.api.openapi import spec_for

METHOD_BADGES = {"get": "badge-ok", "post": "badge-neutral", "put": "badge-warn", "patch": "badge-warn",
                 "delete": "badge-danger"}


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 description of every JSON route under /api/experimental/chats."""
    return jsonify(spec_for(current_app))


@bp.get("/docs")
def api_docs():
    """The same description as a page: operations by tag, their parameters, bodies, answers and schemas."""
    spec = spec_for(current_app)
    return render_template("api/docs.html", spec=spec, groups=_groups(spec), schemas=_schemas(spec),
                           method_badges=METHOD_BADGES)


def _groups(spec: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Operations grouped by tag, in the order of the document's tags."""
    by_tag: dict[str, list[dict[str, Any]]] = {tag["name"]: [] for tag in spec.get("tags", [])}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody")
            by_tag.setdefault(operation["tags"][0], []).append({
                "method": method,
                "path": path,
                "id": operation["operationId"],
                "summary": operation["summary"],
                "description": operation.get("description", ""),
                "security": [" + ".join(requirement) for requirement in operation["security"]] or ["none"],
                "parameters": [{**p, "type": type_tokens(p["schema"])} for p in operation["parameters"]],
                "body": None if body is None else {
                    "required": body["required"],
                    "type": type_tokens(body["content"]["application/json"]["schema"]),
                },
                "responses": [
                    {"status": status, "description": answer["description"],
                     "type": type_tokens(answer["content"]["application/json"]["schema"]) if "content" in answer else [],
                     "headers": sorted(answer.get("headers", {}))}
                    for status, answer in operation["responses"].items()
                ],
            })
    return [(tag, operations) for tag, operations in by_tag.items() if operations]


def _schemas(spec: dict[str, Any]) -> list[dict[str, Any]]:
    schemas = []
    for name, schema in sorted(spec["components"]["schemas"].items()):
        required = set(schema.get("required", []))
        schemas.append({
            "name": name,
            "description": schema.get("description", ""),
            "closed": schema.get("additionalProperties") is False,
            "properties": [
                {"name": prop, "type": type_tokens(sub), "required": prop in required,
                 "description": sub.get("description", "")}
                for prop, sub in schema.get("properties", {}).items()
            ],
        })
    return schemas


def type_tokens(schema: dict[str, Any]) -> list[dict[str, str | None]]:
    """A JSON schema as words, split into tokens so that references can be links:
    `[{"text": "array of ", "ref": None}, {"text": "Provider", "ref": "Provider"}]`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [{"text": name, "ref": name}]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            tokens: list[dict[str, str | None]] = []
            for i, option in enumerate(schema[combinator]):
                if i:
                    tokens.append({"text": " or ", "ref": None})
                tokens += type_tokens(option)
            return tokens
    if "const" in schema:
        return [{"text": repr(schema["const"]), "ref": None}]
    if "enum" in schema:
        return [{"text": "one of " + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in schema["enum"]),
                 "ref": None}]
    kind = schema.get("type")
    if kind == "array":
        return [{"text": "array of ", "ref": None}, *type_tokens(schema.get("items", {}))]
    if kind is None:
        return [{"text": "any JSON value", "ref": None}]
    text = kind
    if "format" in schema:
        text += f" ({schema['format']})"
    bounds = [f"{word} {schema[key]}" for key, word in (("minimum", ">="), ("maximum", "<=")) if key in schema]
    if bounds:
        text += ", " + " and ".join(bounds)
    return [{"text": text, "ref": None}]
