"""Numbers in the back-office stay within their columns: a form field error or "no such record",
never a 500 from PostgreSQL (integer out of range)."""

from __future__ import annotations

from flask_admin.contrib.sqla.form import AdminModelConverter
from flask_admin.model.form import converts
from sqlalchemy import Integer
from wtforms.validators import NumberRange

from shop.bounds import column_max


class BoundedModelConverter(AdminModelConverter):
    """Flask-Admin's converter, with every integer field limited to what its column holds."""

    @converts("Integer")  # includes BigInteger and SmallInteger
    def handle_integer_types(self, column, field_args, **extra):
        hi = column_max(column)
        field_args["validators"].append(
            NumberRange(min=-hi - 1, max=hi, message=f"Enter a whole number from {-hi - 1} to {hi}.")
        )
        return super().handle_integer_types(column, field_args, **extra)


def id_fits(model, id) -> bool:
    """Whether `id` (from ?id=) can name a row of `model`: digits within an integer primary key's range."""
    pk = model.__mapper__.primary_key
    if len(pk) != 1 or not isinstance(pk[0].type, Integer):
        return True
    text = str(id)
    return text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= column_max(pk[0])
