"""Forms of the buying pages: add to cart, change a line, checkout details, place the order.

Flask-WTF: every POST carries the CSRF token. The rules (quantities, stock, addresses, prices) stay in
the services; these forms only turn form fields into values and say what was left out.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, IntegerField, RadioField
from wtforms.validators import DataRequired, InputRequired, Length

from shop.accounts.forms import AddressForm

ADDRESS_FIELDS = ("name", "line1", "line2", "city", "region", "postal_code", "country", "phone")
NEW_ADDRESS = "new"


class AddToCartForm(FlaskForm):
    sku = HiddenField(validators=[DataRequired(), Length(max=64)])
    # Only used to name the item in messages; the variant is always found by its SKU.
    product = HiddenField(validators=[Length(max=200)])
    quantity = IntegerField(
        "Quantity", default=1, validators=[InputRequired(message="Enter how many you want, as a whole number.")]
    )


class QuantityForm(FlaskForm):
    quantity = IntegerField("Quantity", validators=[InputRequired(message="Enter a quantity as a whole number.")])


class CheckoutForm(AddressForm):
    """E-mail, where to ship (a saved address or a new one) and how."""

    email = EmailField(
        "E-mail address",
        validators=[DataRequired(), Length(max=254)],
        description="For the order confirmation and delivery updates.",
    )
    saved_address = RadioField("Ship to", choices=[], validate_choice=False, default=NEW_ADDRESS)
    shipping_method = RadioField(
        "Shipping method",
        choices=[],
        default="standard",
        validators=[DataRequired(message="Choose a shipping method.")],
    )

    def uses_saved_address(self) -> bool:
        return bool(self.saved_address.data) and self.saved_address.data != NEW_ADDRESS

    def validate(self, extra_validators=None) -> bool:
        if not self.uses_saved_address():
            return super().validate(extra_validators)
        # A saved address replaces the typed one: its fields may stay empty.
        ok = True
        for name in ("csrf_token", "email", "saved_address", "shipping_method"):
            if name in self:
                ok = self[name].validate(self) and ok
        return ok


class PlaceOrderForm(FlaskForm):
    cart_id = HiddenField(validators=[DataRequired(), Length(max=64)])
    # One per review page: a second click (or a resubmitted page) with the same nonce places no second order.
    nonce = HiddenField(validators=[DataRequired(), Length(min=8, max=255)])
