"""The OpenAPI 3.1 document of /api/v1, generated: the paths and methods from the app's URL rules, each operation
from its view's `@operation` declaration (shop.api.contract), who may call it from its auth decorators, and every
schema from the pydantic models of shop.api.schemas (their JSON Schema is OpenAPI 3.1's dialect). apispec assembles
the document (components, paths, checks for duplicate names and parameters).

`check_response` holds the answers to the same declarations: under test (CHECK_API_RESPONSES) every JSON answer of
the API must be a status its operation lists, with a body its model accepts.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
from apispec import APISpec
from flask import Flask, Response, current_app, request
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shop.api import schemas
from shop.api.contract import Answer, Operation

PREFIX = "/api"  # the blueprint's prefix: the document's server URL
METHODS = ("get", "post", "put", "patch", "delete")
RULE_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
CONVERTER_SCHEMA = {"int": {"type": "integer", "minimum": 0}, "path": {"type": "string"}}

COMMON: dict[int, str] = {
    400: "malformed_request: a body that is not a JSON object, a NUL byte in the request",
    405: "method not allowed",
    500: "unexpected error, logged with its request id",
    503: "unavailable: a server the shop needs (database, Redis) cannot be reached just now; try again (Retry-After)",
}
NOT_AUTHENTICATED = "not_authenticated: no, bad, expired or revoked bearer token"
FORBIDDEN = "forbidden: your role does not allow this (details.permission)"
SUCCESS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content"}

WEBHOOK_HEADERS = [
    {"name": n, "in": "header", "required": True, "schema": {"type": "string"}, "description": d}
    for n, d in (
        ("webhook-id", "the event id: the same on every attempt; deduplicate by it"),
        ("webhook-timestamp", "Unix seconds when this attempt was sent"),
        (
            "webhook-signature",
            'v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with '
            "the secret's base64-decoded bytes (after whsec_)>",
        ),
    )
]


def _ref(model: type[pydantic.BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schemas.Error)}}}


def declared(view: Any) -> Operation | None:
    return getattr(view, "__operation__", None)


def answers(view: Any) -> dict[int, Answer]:
    """Every status the view's operation may answer: its own, then the ones every operation shares."""
    op = declared(view)
    assert op is not None
    out: dict[int, Answer] = dict(op.responses)
    if op.body is not None:
        out.setdefault(413, "payload_too_large: the body is over MAX_CONTENT_LENGTH")
    if getattr(view, "__auth__", None):
        out.setdefault(401, NOT_AUTHENTICATED)
    if getattr(view, "__permissions__", None):
        out.setdefault(403, FORBIDDEN)
    for status, text in COMMON.items():
        out.setdefault(status, text)
    return out


def _operation(endpoint: str, view: Any, rule_variables: list[tuple[str, str]]) -> dict[str, Any]:
    op = declared(view)
    assert op is not None, f"{endpoint} has no @operation"
    own = {p.name: p for p in op.params if p.where == "path"}
    params = [
        own[name].openapi()
        if name in own
        else {
            "name": name,
            "in": "path",
            "required": True,
            "schema": CONVERTER_SCHEMA.get(converter, {"type": "string"}),
        }
        for converter, name in rule_variables
    ]
    params += [p.openapi() for p in op.params if p.where != "path"]
    responses: dict[str, Any] = {}
    for status, answer in sorted(answers(view).items()):
        if isinstance(answer, str):
            responses[str(status)] = _error(answer)
        elif answer is None:
            responses[str(status)] = {"description": SUCCESS.get(status, "OK")}
        else:
            description = SUCCESS.get(status, "OK")
            responses[str(status)] = {
                "description": description,
                "content": {"application/json": {"schema": _ref(answer)}},
            }
    out: dict[str, Any] = {"operationId": endpoint.removeprefix("api."), "summary": op.summary, "tags": list(op.tags)}
    if op.description:
        out["description"] = op.description
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    if getattr(view, "__auth__", None):
        out["security"] = [{"bearer": []}]
    out["responses"] = responses
    return out


def _components(operations: list[Operation]) -> dict[str, Any]:
    """The JSON Schemas of every model the operations name (and what they reference), by model name."""
    requests = {op.body for op in operations if op.body is not None}
    replies: set[type[pydantic.BaseModel]] = {
        a
        for op in operations
        for a in op.responses.values()
        if isinstance(a, type) and issubclass(a, pydantic.BaseModel)
    }
    replies |= {schemas.Error, schemas.Event, schemas.Targets}
    pairs: list[tuple[type[pydantic.BaseModel], JsonSchemaMode]] = [
        (m, "validation") for m in sorted(requests, key=lambda m: m.__name__)
    ]
    pairs += [(m, "serialization") for m in sorted(replies, key=lambda m: m.__name__)]
    _, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = top.get("$defs", {})
    clash = sorted(name for name in defs if name.endswith(("-Input", "-Output")))
    assert not clash, f"a model is used for requests and answers with different shapes: {clash}"
    return defs


def build(app: Flask) -> dict[str, Any]:
    """The document for `app`'s /api routes."""
    spec = APISpec(
        title="The shop API",
        version="1.0.0",
        openapi_version="3.1.0",
        info={
            "description": "Public contract of the shop. Money is integer minor units. Every error is "
            "`{error: {code, message, details}}`; every response carries X-Request-ID."
        },
        servers=[{"url": PREFIX}],
        webhooks={
            "event": {
                "post": {
                    "summary": "An event the endpoint subscribes to (Standard Webhooks)",
                    "tags": ["webhooks"],
                    "description": "Any 2xx within 10 s is success. Anything else is retried with backoff and "
                    "jitter: after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 10 h (9 attempts over about 37 hours). "
                    "Redirects are followed up to 3 times. An endpoint failing for 3 days is disabled.",
                    "parameters": WEBHOOK_HEADERS,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(schemas.Event)}}},
                    "responses": {"2XX": {"description": "Received"}},
                }
            }
        },
    )
    paths: dict[str, dict[str, Any]] = {}
    operations: list[Operation] = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith("api.") or not rule.rule.startswith(f"{PREFIX}/v1/"):
            continue  # /api/docs and its static files are pages, not operations
        view = app.view_functions[rule.endpoint]
        op = declared(view)
        assert op is not None, f"{rule.rule} ({rule.endpoint}) has no @operation: declare it (shop.api.contract)"
        operations.append(op)
        variables = [(m["converter"] or "default", m["name"]) for m in RULE_VARIABLE.finditer(rule.rule)]
        path = RULE_VARIABLE.sub(lambda m: "{" + m["name"] + "}", rule.rule).removeprefix(PREFIX)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, view, variables)
    for name, schema in _components(operations).items():
        spec.components.schema(name, component=schema)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for path, ops in paths.items():
        spec.path(path=path, operations=ops)
    return spec.to_dict()


def spec() -> dict[str, Any]:
    """The document of the current app, built once per app."""
    cached: dict[str, Any] | None = current_app.extensions.get("openapi")
    if cached is None:
        cached = current_app.extensions["openapi"] = build(current_app._get_current_object())  # type: ignore[attr-defined]
    return cached


class BrokenContract(AssertionError):
    """An answer of the API that its declared operation does not allow (raised under test only)."""


def check_response(response: Response) -> Response:
    """Under test: the answer's status is one the operation lists and its JSON body fits that status's model."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or declared(view) is None or not request.path.startswith(f"{PREFIX}/v1/"):
        return response
    if request.method in ("HEAD", "OPTIONS"):
        return response  # Werkzeug's own answers: no body to hold to the operation's model
    listed = answers(view)
    where = f"{request.method} {request.path} answered {response.status_code}"
    if response.status_code == 304:
        return response  # a conditional GET: no body
    if response.status_code not in listed:
        raise BrokenContract(f"{where}, a status its operation does not list ({sorted(listed)})")
    answer = listed[response.status_code]
    model = schemas.Error if isinstance(answer, str) else answer
    if model is None:
        return response
    try:
        model.model_validate_json(response.get_data(), strict=True)
    except pydantic.ValidationError as exc:
        raise BrokenContract(f"{where} with a body that breaks {model.__name__}: {exc}") from None
    return response
