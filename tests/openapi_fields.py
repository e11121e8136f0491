"""The API's fields, read from its OpenAPI schema: for every operation its parameters, the fields of its request
body and the fields of each response, nested fields included, each with its JSON type (an enumeration with its
values). Components are followed by
reference and their names left out, so a component renamed or a model moved keeps the same fields."""

from __future__ import annotations

import json
from typing import Any

PRIMITIVES = ("string", "integer", "number", "boolean", "null")


def _shape(node: dict[str, Any], components: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return f"<{name}: recursive>" if name in seen else _shape(components[name], components, (*seen, name))
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = [_shape(option, components, seen) for option in node[key]]
            return {key: sorted(options, key=lambda option: json.dumps(option, sort_keys=True))}
    if "enum" in node:
        return {"enum": sorted(node["enum"], key=json.dumps)}
    if "properties" in node:
        return {name: _shape(field, components, seen) for name, field in sorted(node["properties"].items())}
    kind = node.get("type")
    if kind == "array":
        return [_shape(node.get("items", {}), components, seen)]
    if kind == "object":
        extra = node.get("additionalProperties")
        return {"*": _shape(extra, components, seen)} if isinstance(extra, dict) else "object"
    if kind in PRIMITIVES:
        return kind
    return "any"


def _body(content: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    return {media: _shape(value.get("schema", {}), components, ()) for media, value in sorted(content.items())}


def api_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """{path: {method: {"parameters", "request", "responses"}}}, every field with its type."""
    components = schema.get("components", {}).get("schemas", {})
    fields: dict[str, Any] = {}
    for path, operations in sorted(schema["paths"].items()):
        for method, operation in sorted(operations.items()):
            parameters = {
                f"{p['in']}:{p['name']}": _shape(p.get("schema", {}), components, ())
                for p in operation.get("parameters", [])
            }
            request = operation.get("requestBody", {}).get("content", {})
            responses = {
                status: _body(answer.get("content", {}), components)
                for status, answer in sorted(operation["responses"].items())
            }
            fields.setdefault(path, {})[method] = {
                "parameters": dict(sorted(parameters.items())),
                "request": _body(request, components),
                "responses": responses,
            }
    return fields
