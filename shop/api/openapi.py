"""The OpenAPI 3.1 description of /api/v1. Every endpoint the API serves is described here; a test
checks that the app's routes and this document name the same paths."""
from __future__ import annotations

from functools import lru_cache

from shop.catalog.queries import MAX_PER_PAGE, SORTS


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SCHEMAS = {
    "Money": {"type": "object", "required": ["amount", "currency"], "properties": {
        "amount": {"type": "integer", "description": "minor units (cents)"},
        "currency": {"type": "string", "example": "USD"}}},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"type": "string", "example": "validation_failed"},
            "message": {"type": "string"},
            "details": {"type": "object", "description": "for 422: {fields: {name: problem}}"}}}}},
    "Category": {"type": "object", "required": ["id", "slug", "name", "parent_id"], "properties": {
        "id": {"type": "integer"}, "slug": {"type": "string"}, "name": {"type": "string"},
        "parent_id": {"type": ["integer", "null"]}}},
    "ProductSummary": {"type": "object", "required": ["id", "slug", "name", "price_from", "image_url", "in_stock"],
                       "properties": {
                           "id": {"type": "integer"}, "slug": {"type": "string"}, "name": {"type": "string"},
                           "brand": {"type": "string"},
                           "price_from": {"oneOf": [_ref("Money"), {"type": "null"}]},
                           "image_url": {"type": ["string", "null"]}, "in_stock": {"type": "boolean"}}},
    "ProductPage": {"type": "object", "required": ["items", "page", "per_page", "total"], "properties": {
        "items": {"type": "array", "items": _ref("ProductSummary")}, "page": {"type": "integer"},
        "per_page": {"type": "integer"}, "total": {"type": "integer"}}},
    "Variant": {"type": "object", "required": ["id", "sku", "options", "price", "available"], "properties": {
        "id": {"type": "integer"}, "sku": {"type": "string"},
        "options": {"type": "object", "additionalProperties": {"type": "string"}, "example": {"size": "M"}},
        "price": _ref("Money"), "compare_at_price": {"oneOf": [_ref("Money"), {"type": "null"}]},
        "available": {"type": "integer", "minimum": 0, "description": "on hand minus live reservations"},
        "weight_grams": {"type": "integer"}}},
    "Product": {"type": "object",
                "required": ["id", "slug", "name", "description", "category", "images", "options", "variants"],
                "properties": {
                    "id": {"type": "integer"}, "slug": {"type": "string"}, "name": {"type": "string"},
                    "brand": {"type": "string"}, "description": {"type": "string"},
                    "category": {"type": "object", "properties": {"id": {"type": "integer"},
                                                                  "slug": {"type": "string"},
                                                                  "name": {"type": "string"}}},
                    "attributes": {"type": "object"},
                    "images": {"type": "array", "items": {"type": "string"}},
                    "image_alts": {"type": "array", "items": {"type": "string"}},
                    "options": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "values": {"type": "array", "items": {"type": "string"}}}}},
                    "variants": {"type": "array", "items": _ref("Variant")}}},
}

COMMON_ERRORS = {"405": _error("method not allowed"), "500": _error("unexpected error, logged with its request id")}


@lru_cache(maxsize=1)
def spec() -> dict:
    """The document, built once per process."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "The shop API", "version": "1.0.0",
                 "description": "Public contract of the shop. Money is integer minor units. Every error is "
                                "`{error: {code, message, details}}`; every response carries X-Request-ID."},
        "servers": [{"url": "/api"}],
        "paths": {
            "/v1/categories": {"get": {
                "summary": "All categories (a tree through parent_id)", "tags": ["catalog"],
                "responses": {"200": _ok({"type": "array", "items": _ref("Category")}), **COMMON_ERRORS}}},
            "/v1/products": {"get": {
                "summary": "A page of active products", "tags": ["catalog"],
                "parameters": [
                    _query("category", {"type": "string"}, "category slug; includes its sub-categories"),
                    _query("min_price", {"type": "integer", "minimum": 0}, "minor units"),
                    _query("max_price", {"type": "integer", "minimum": 0}, "minor units"),
                    _query("in_stock", {"type": "boolean"}, "only products with a variant available"),
                    _query("sort", {"type": "string", "enum": list(SORTS), "default": "newest"}, "order"),
                    _query("page", {"type": "integer", "minimum": 1, "default": 1}, "page number"),
                    _query("per_page", {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 20},
                           "page size")],
                "responses": {"200": _ok(_ref("ProductPage")),
                              "422": _error("a query parameter is not valid (details.fields names it)"),
                              **COMMON_ERRORS}}},
            "/v1/products/{slug}": {"get": {
                "summary": "One active product with its options and variants", "tags": ["catalog"],
                "parameters": [{"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok(_ref("Product")), "404": _error("no such active product"),
                              **COMMON_ERRORS}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "tags": ["meta"],
                                         "responses": {"200": {"description": "OpenAPI 3.1 JSON"}}}},
        },
        "components": {"schemas": SCHEMAS},
    }
