"""Storefront and back-office forms (Flask-WTF: every POST carries a CSRF token)."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from shop.accounts.passwords import MAX_LENGTH, MIN_LENGTH

_password = [DataRequired(), Length(min=MIN_LENGTH, max=MAX_LENGTH,
                                    message=f"Use at least {MIN_LENGTH} characters.")]


class LoginForm(FlaskForm):
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_LENGTH)])
    remember = BooleanField("Keep me logged in on this device")


class SignupForm(FlaskForm):
    name = StringField("Your name", validators=[Optional(), Length(max=120)])
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=_password,
                             description=f"At least {MIN_LENGTH} characters. A few unrelated words work well.")
    confirm = PasswordField("Repeat the password",
                            validators=[DataRequired(), EqualTo("password", message="The passwords differ.")])


class ResetRequestForm(FlaskForm):
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=254)])


class ResetForm(FlaskForm):
    password = PasswordField("New password", validators=_password)
    confirm = PasswordField("Repeat the new password",
                            validators=[DataRequired(), EqualTo("password", message="The passwords differ.")])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=_password)
    confirm = PasswordField("Repeat the new password",
                            validators=[DataRequired(), EqualTo("password", message="The passwords differ.")])


class AddressForm(FlaskForm):
    name = StringField("Full name", validators=[DataRequired(), Length(max=120)])
    line1 = StringField("Address line 1", validators=[DataRequired(), Length(max=200)])
    line2 = StringField("Address line 2 (optional)", validators=[Optional(), Length(max=200)])
    city = StringField("City", validators=[DataRequired(), Length(max=120)])
    region = StringField("State or region (optional)", validators=[Optional(), Length(max=120)])
    postal_code = StringField("Postal code", validators=[DataRequired(), Length(max=20)])
    country = StringField("Country (2-letter code, e.g. US)", validators=[DataRequired(), Length(min=2, max=2)])
    phone = StringField("Phone (optional)", validators=[Optional(), Length(max=40)])


class ActionForm(FlaskForm):
    """A button-only form (log out, delete, resend): the CSRF token is its only field."""
