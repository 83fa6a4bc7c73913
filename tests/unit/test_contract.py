"""The contract in code: the OpenAPI document is generated from the views' declarations and the pydantic models,
bodies are read through the models the document shows, and (under test) answers are held to their models."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from shop import create_app
from shop.api import schemas
from shop.api.contract import operation, parse
from shop.api.openapi import BrokenContract, build, check_response
from shop.errors import ValidationError


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app("test")


@pytest.fixture(scope="module")
def document(app: Flask) -> dict:
    return build(app)


def test_every_api_route_and_method_is_an_operation_of_the_document(app, document):
    served = {
        (method.lower(), rule.rule.removeprefix("/api").replace("<int:", "<"))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {
        (method, path.replace("{", "<").replace("}", ">"))
        for path, item in document["paths"].items()
        for method in item
    }
    assert served == documented and len(served) > 40


def test_every_reference_resolves_and_every_operation_answers_errors_in_one_shape(document):
    text = json.dumps(document)
    names = set(document["components"]["schemas"])
    refs = {ref.rsplit("/", 1)[1] for ref in __import__("re").findall(r'"\$ref": "([^"]+)"', text)}
    assert refs <= names, f"dangling references: {refs - names}"
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_request_bodies_in_the_document_are_the_models_the_views_parse(document):
    checkout = document["paths"]["/v1/checkout"]["post"]
    assert checkout["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CheckoutIn")
    body = document["components"]["schemas"]["CheckoutIn"]
    assert set(body["required"]) == {"cart_id", "shipping_address"}
    assert body["properties"]["shipping_method"]["enum"] == ["standard", "express"]
    # Who may call comes from the auth decorators: staff operations list 401 and 403, public ones neither.
    refunds = document["paths"]["/v1/admin/orders/{order_id}/refunds"]["post"]
    assert refunds["security"] == [{"bearer": []}] and {"401", "403", "413"} <= set(refunds["responses"])
    product = document["paths"]["/v1/products/{slug}"]["get"]
    assert "security" not in product and not {"401", "403", "413"} & set(product["responses"])


def test_a_bad_body_names_each_field_as_the_contract_does(app):
    with app.app_context(), pytest.raises(ValidationError) as refused:
        parse(
            schemas.NewProduct,
            {
                "name": 7,
                "variants": [{"sku": "A", "price": "12.00"}, {"sku": "B", "price": 100, "on_hand": -1}],
                "images": [{"url": "x", "alt": "y" * 301}],
            },
        )
    assert refused.value.details["fields"] == {
        "name": "must be text",
        "variants[0].price": "must be an amount in minor units from 0 to 2147483647",
        "variants[1].on_hand": "must be at least 0",
        "images[0].alt": "must be at most 300 characters",
    }


@pytest.mark.parametrize(
    "price,expected",
    [
        (1999, 1999),
        ({"amount": 1999, "currency": "USD"}, 1999),
        ({"amount": 1999}, 1999),  # a Money object without a currency is in the shop's
        ({"amount": 1999, "currency": "EUR"}, "must be in USD, the shop's currency"),
        (True, "must be an amount in minor units from 0 to 2147483647"),
        (19.99, "must be an amount in minor units from 0 to 2147483647"),
        (-1, "must be an amount in minor units from 0 to 2147483647"),
    ],
)
def test_money_comes_in_as_minor_units_or_a_money_object_in_the_shops_currency(app, price, expected):
    with app.app_context():
        body = {"sku": "A", "price": price}
        if isinstance(expected, int):
            assert parse(schemas.VariantIn, body).price == expected
        else:
            with pytest.raises(ValidationError) as refused:
                parse(schemas.VariantIn, body)
            assert refused.value.details["fields"] == {"price": expected}


def test_a_refund_takes_money_in_the_orders_currency(app):
    with app.app_context():
        assert parse(schemas.RefundIn, {"amount": {"amount": 500, "currency": "EUR"}}, currency="EUR").amount == 500
        with pytest.raises(ValidationError) as refused:
            parse(schemas.RefundIn, {"amount": {"amount": 500, "currency": "USD"}}, currency="EUR")
        assert refused.value.details["fields"] == {"amount": "must be in EUR"}


def test_an_answer_the_document_does_not_describe_breaks_the_contract():
    """The checker the suite runs on every API answer: a key the model does not name, a status the operation does
    not list, and a body of the wrong type are each refused; a conforming answer passes."""
    app = create_app("test")  # its own app: the route below is not part of the shop
    answers = {"good": {"id": 1, "slug": "s", "name": "n", "parent_id": None}}
    answers["extra"] = {**answers["good"], "secret": "x"}
    answers["wrong"] = {**answers["good"], "id": "1"}

    @app.get("/api/v1/probe/<kind>", endpoint="api.probe")
    @operation("probe", tags=["test"], responses={200: schemas.Category})
    def probe(kind: str):
        if kind == "teapot":
            return {"error": {"code": "teapot", "message": "", "details": {}}}, 418
        return answers[kind]

    assert check_response in app.after_request_funcs[None]
    client = app.test_client()
    assert client.get("/api/v1/probe/good").get_json()["slug"] == "s"
    for kind, complaint in (
        ("extra", "Extra inputs are not permitted"),
        ("wrong", "Input should be a valid integer"),
        ("teapot", "a status its operation does not list"),
    ):
        with pytest.raises(BrokenContract, match=complaint):
            client.get(f"/api/v1/probe/{kind}")
