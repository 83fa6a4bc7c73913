"""How a view declares its part of the contract, and how a request body is read through its model.

A view of /api/v1 carries `@operation(...)` just under its route: a summary, the body model it parses, its query
parameters and what each status means. `shop.api.openapi` builds the OpenAPI document from those declarations, the
app's URL rules and the pydantic models of `shop.api.schemas`, so the document describes what the code does:

    @bp.post("/v1/carts/<cart_id>/items")
    @operation("Add units of a SKU", tags=["cart"], body=schemas.AddItem,
               responses={201: schemas.Cart, 409: "out_of_stock ...", 422: "quantity < 1 or > 100"})
    def add_item(cart_id):
        item = parse_body(schemas.AddItem)
        ...

`parse_body` validates the JSON body with the same model the document shows; a bad body is the contract's
422 validation_failed with `details.fields` naming each bad field (`variants[0].price`, `shipping_address.country`).
Who may call comes from the auth decorators themselves (`login_required`, `permission_required`), not from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from shop.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

# What a status answers: a model (its JSON body), a string (an Error whose `code`s it names) or None (no body).
Answer = type[pydantic.BaseModel] | Any | str | None


@dataclass(frozen=True)
class Param:
    """A query, path or header parameter: its JSON Schema and what it means."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""
    where: str = "query"
    required: bool = False
    style: Mapping[str, Any] = field(default_factory=dict)

    def openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "schema": dict(self.schema),
            **({"description": self.description} if self.description else {}),
            **self.style,
        }


@dataclass(frozen=True)
class Operation:
    summary: str
    tags: tuple[str, ...]
    body: type[pydantic.BaseModel] | None
    params: tuple[Param, ...]
    responses: Mapping[int, Answer]
    description: str = ""


def operation(
    summary: str,
    *,
    tags: Sequence[str],
    body: type[pydantic.BaseModel] | None = None,
    params: Sequence[Param] = (),
    responses: Mapping[int, Answer],
    description: str = "",
) -> Callable[[F], F]:
    """Declare the view's operation (see the module's docstring). Place it just under the route decorator."""

    def decorate(view: F) -> F:
        view.__operation__ = Operation(  # type: ignore[attr-defined]
            summary, tuple(tags), body, tuple(params), dict(responses), description
        )
        return view

    return decorate


def query(name: str, schema: Mapping[str, Any], description: str = "", **style: Any) -> Param:
    return Param(name, schema, description, "query", style=style)


def header(name: str, description: str, *, required: bool = False, schema: Mapping[str, Any] | None = None) -> Param:
    return Param(name, schema or {"type": "string"}, description, "header", required)


def path(name: str, schema: Mapping[str, Any], description: str = "") -> Param:
    """A path parameter's schema beyond what its URL converter says (a uuid, say)."""
    return Param(name, schema, description, "path", True)


PAGE = query("page", {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 1}, "page number")
PER_PAGE = query("per_page", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "page size")


# ---- reading a body through its model ----


def where(loc: Sequence[int | str]) -> str:
    """pydantic's location of an error as the contract names fields: ("variants", 0, "price") -> variants[0].price."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as the house's short sentence ("must be a whole number")."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number"
    if kind in ("string_type", "string_sub_type"):
        return "must be text"
    if kind == "bool_type":
        return "must be true or false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be an object"
    if kind == "list_type":
        return "must be a list"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "string_too_short":
        return "is required" if ctx.get("min_length") == 1 else f"must be at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "too_short":
        return f"must hold at least {ctx['min_length']} item" + ("s" if ctx["min_length"] != 1 else "")
    if kind == "too_long":
        return f"must hold at most {ctx['max_length']} items"
    if kind in ("literal_error", "enum"):
        return f"must be one of: {str(ctx.get('expected', '')).replace(' or ', ', ')}".replace("'", "")
    if kind == "extra_forbidden":
        return "is not a field of this object"
    if kind == "string_pattern_mismatch":
        return "has characters that are not allowed"
    if kind == "value_error":
        return str(ctx.get("error") or error["msg"])
    return str(error["msg"])


def parse(model: type[M], data: Any, **context: Any) -> M:
    """`data` validated by `model`; ValidationError (422) naming every bad field, the first problem of each.
    `context` reaches the validators (the currency a refund's amount must be in)."""
    try:
        return model.model_validate(data, context=context or None)
    except pydantic.ValidationError as exc:
        fields: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            fields.setdefault(where(error["loc"]), problem(error))
        raise ValidationError(fields) from None


def parse_body(model: type[M], **context: Any) -> M:
    """The request's JSON object (400 when it is not one) validated by `model` (422 naming the bad fields)."""
    from shop.api.auth import json_body

    return parse(model, json_body(), **context)
