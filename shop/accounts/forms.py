"""Storefront and back-office forms (Flask-WTF: every POST carries a CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from shop.accounts.passwords import MAX_LENGTH, MIN_LENGTH

_password = [DataRequired(), Length(min=MIN_LENGTH, max=MAX_LENGTH, message=f"Use at least {MIN_LENGTH} characters.")]


class LoginForm(FlaskForm):
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_LENGTH)])
    remember = BooleanField("Keep me logged in on this device")


class SignupForm(FlaskForm):
    name = StringField("Your name", validators=[Optional(), Length(max=120)])
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=254)])
    password = PasswordField(
        "Password",
        validators=_password,
        description=f"At least {MIN_LENGTH} characters. A few unrelated words work well.",
    )
    confirm = PasswordField(
        "Repeat the password", validators=[DataRequired(), EqualTo("password", message="The passwords differ.")]
    )


class ResetRequestForm(FlaskForm):
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=254)])


class ResetForm(FlaskForm):
    password = PasswordField("New password", validators=_password)
    confirm = PasswordField(
        "Repeat the new password", validators=[DataRequired(), EqualTo("password", message="The passwords differ.")]
    )


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=_password)
    confirm = PasswordField(
        "Repeat the new password", validators=[DataRequired(), EqualTo("password", message="The passwords differ.")]
    )


def _code(value):
    return (value or "").strip().upper() if isinstance(value, str) or value is None else value


def _tax_rates() -> dict:
    from shop.pricing import tax_table

    return tax_table().rates


class AddressForm(FlaskForm):
    """An address. The country is a <select> of ISO 3166-1 countries by name (the shop's main ones first). Where
    tax depends on the region (the tax table's "COUNTRY-REGION" rates: US states by default) the `state` <select>
    gives it; `region` is the free text for other countries. Both are shown without JavaScript, labelled for
    whom they are; shop/static/address.js shows only the one the chosen country needs."""

    name = StringField("Full name", validators=[DataRequired(), Length(max=120)])
    line1 = StringField("Address line 1", validators=[DataRequired(), Length(max=200)])
    line2 = StringField("Address line 2 (optional)", validators=[Optional(), Length(max=200)])
    city = StringField("City", validators=[DataRequired(), Length(max=120)])
    state = SelectField("State", choices=[], validate_choice=False, coerce=_code)
    region = StringField("County, province or region (optional)", validators=[Optional(), Length(max=120)])
    postal_code = StringField("Postal code", validators=[DataRequired(), Length(max=20)])
    country = SelectField(
        "Country", choices=[], coerce=_code, default="US", validators=[DataRequired(message="Choose a country.")]
    )
    phone = StringField("Phone (optional)", validators=[Optional(), Length(max=40)])

    def __init__(self, *args, **kwargs):
        from shop import geo

        super().__init__(*args, **kwargs)
        rates = _tax_rates()
        self.regional = geo.regional_countries(rates)
        main = geo.main_countries(rates)
        self.country.choices = dict(geo.country_choices(main)) if main else geo.country_choices()
        if self.country.data in (None, "") and not self.is_submitted():
            self.country.data = main[0] if main else ""
        names = [geo.country_name(c) for c in self.regional]
        if self.regional == ["US"]:
            self.state.label.text = "State (US addresses)"
        else:
            self.state.label.text = f"State or province ({', '.join(names)} addresses)"
        blank = ("", "Choose a state" if self.regional == ["US"] else "Choose one")
        if len(self.regional) == 1:
            self.state.choices = [blank, *geo.regions(self.regional[0]).items()]
        else:
            self.state.choices = {
                "": [blank],
                **{geo.country_name(c): list(geo.regions(c).items()) for c in self.regional},
            }
        if self.regional:
            self.region.label.text = (
                f"County, province or region (outside {' and '.join(names)}, optional)"
                if self.regional != ["US"]
                else "County, province or region (outside the US, optional)"
            )
        # A saved or typed region of a country with regional tax shows in the state select.
        if not self.state.data and self.country.data in self.regional and self.region.data:
            code = geo.region_code(self.country.data, self.region.data)
            if code:
                self.state.data = code
                if not self.is_submitted():  # shown once, in the select
                    self.region.data = ""

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        return self.check_region() and ok

    def check_region(self) -> bool:
        """A country with regional tax needs one of its regions (from the select, or typed as its code or name)."""
        from shop import geo

        country = self.country.data
        if country not in self.regional:
            return True
        given = self.state.data or (self.region.data or "").strip()
        if given and geo.region_code(country, given) is not None:
            return True
        name = geo.country_name(country)
        self.state.errors = list(self.state.errors) + [
            "Choose a state: it sets the sales tax." if not given else f"Choose one of the states of {name}."
        ]
        # Also on the free-text region, which takes a state's code or name too (and is all a page without the
        # state select shows); with JavaScript it is hidden for these countries.
        example = "CA" if "CA" in geo.regions(country) else next(iter(geo.regions(country)), "")
        self.region.errors = list(self.region.errors) + [f"A {name} address needs its state (e.g. {example})."]
        return False

    def address(self) -> dict:
        """The address as the services take it: `region` is the state's code where tax depends on the region."""
        from shop import geo

        fields = ("name", "line1", "line2", "city", "region", "postal_code", "country", "phone")
        out = {name: (self[name].data or "").strip() for name in fields}
        if out["country"] in self.regional:
            out["region"] = geo.region_code(out["country"], self.state.data or out["region"]) or out["region"]
        return out


class ActionForm(FlaskForm):
    """A button-only form (log out, delete, resend): the CSRF token is its only field."""
