"""Account rules: sign-up, log-in with throttling, password changes and resets, e-mail
verification, the address book and staff creation. Each public function is one transaction."""

from __future__ import annotations

import hashlib
from datetime import UTC
from enum import StrEnum
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask import current_app, has_request_context, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shop import clock, events, ratelimit
from shop.accounts.models import ROLES, Address, User
from shop.accounts.passwords import hash_password, needs_rehash, password_problem, verify_password
from shop.errors import Conflict, Malformed, NotAuthenticated, TooMany, ValidationError
from shop.extensions import db
from shop.notifications import notify
from shop.notifications.services import digest


class AccountErrorCode(StrEnum):
    EMAIL_TAKEN = "email_taken"
    INVALID_CREDENTIALS = "invalid_credentials"
    RATE_LIMITED = "rate_limited"
    INVALID_TOKEN = "invalid_token"


class EmailTaken(Conflict):
    def __init__(self) -> None:
        super().__init__(AccountErrorCode.EMAIL_TAKEN, "An account with this e-mail address already exists.")


class BadCredentials(NotAuthenticated):
    def __init__(self) -> None:
        super().__init__(AccountErrorCode.INVALID_CREDENTIALS, "The e-mail address or password is not right.")


class Throttled(TooMany):
    def __init__(self, retry_after: int, limit: int | None = None) -> None:
        super().__init__(
            AccountErrorCode.RATE_LIMITED,
            "Too many failed log-in attempts. Try again later.",
            {"retry_after": retry_after},
            retry_after=retry_after,
            limit=limit,
        )


class BadToken(Malformed):
    """A link's token (verification, password reset) that is not valid: the link, not the asker, is wrong."""

    def __init__(self, message: str = "This link is not valid. Ask for a new one.") -> None:
        super().__init__(AccountErrorCode.INVALID_TOKEN, message)


# -- helpers -------------------------------------------------------------------------------------
def normalise_email(email: Any) -> str:
    """A syntactically valid address, lower-cased; raises ValidationError otherwise."""
    if not isinstance(email, str) or len(email) > 254:
        raise ValidationError({"email": "is not a valid e-mail address"})
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise ValidationError({"email": "is not a valid e-mail address"}) from None


def user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"shop.accounts.{purpose}")


def _read_link(purpose: str, token: str, max_age_setting: str, expired_message: str) -> dict[str, Any]:
    """The payload of a signed link we mailed; BadToken when expired or altered."""
    try:
        data = _serializer(purpose).loads(token, max_age=current_app.config[max_age_setting])
    except SignatureExpired:
        raise BadToken(expired_message) from None
    except BadSignature:
        raise BadToken() from None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int):
        raise BadToken()
    return data


def _fingerprint(password_hash: str) -> str:
    # Changes whenever the password does, which makes a reset link single-use.
    return hashlib.sha256(password_hash.encode()).hexdigest()[:20]


def external_url(endpoint: str, **values: Any) -> str:
    """A link for mails: always at PUBLIC_BASE_URL, never at the Host a request came with."""
    from shop.security import external_url as public_url

    return public_url(endpoint, **values)


def _client_ip() -> str:
    return (request.remote_addr or "unknown") if has_request_context() else "local"


# -- sign-up and verification --------------------------------------------------------------------
def register(email: Any, password: Any, name: Any = "") -> User:
    """Create a shopper account and mail a verification link. 409 when the address is taken."""
    fields = {}
    try:
        email = normalise_email(email)
    except ValidationError as exc:
        fields.update(exc.details["fields"])
    if problem := password_problem(password):
        fields["password"] = problem
    if not isinstance(name, str) or len(name) > 120:
        fields["name"] = "must be text of at most 120 characters"
    if fields:
        raise ValidationError(fields)
    # Counted before the address is looked up: probing which addresses have accounts is limited too.
    ratelimit.enforce("RATE_SIGNUPS_PER_IP", message="Too many sign-ups from your network just now; try again later.")
    if user_by_email(email):
        raise EmailTaken()
    user = User(email=email, name=name.strip(), password_hash=hash_password(password))
    db.session.add(user)
    try:
        db.session.flush()  # the unique index settles two sign-ups racing for one address
    except IntegrityError as exc:
        db.session.rollback()
        raise EmailTaken() from exc
    _send_verification(user)
    # A shopper's id and when: no e-mail or name leaves the process (staff accounts publish nothing).
    at = user.created_at if user.created_at.tzinfo else user.created_at.replace(tzinfo=UTC)
    events.publish(
        "customer.created", "customer", user.id, {"customer_id": user.id, "created_at": at.astimezone(UTC).isoformat()}
    )
    db.session.commit()
    return user


def _send_verification(user: User) -> None:
    token = _serializer("verify").dumps({"u": user.id, "e": user.email})
    notify(
        "account.verify_email",
        user.email,
        {
            "name": user.name,
            "link": external_url("storefront.verify_email", token=token),
            "hours": current_app.config["EMAIL_TOKEN_MAX_AGE"] // 3600,
        },
        key=f"user:{user.id}:verify:{digest(token)}",
    )  # each new link is a new mail


def resend_verification(user: User) -> None:
    """Mail a new confirmation link (rate-limited per IP and per account: 429 beyond)."""
    message = "We sent confirmation links a moment ago; check your inbox, or ask again later."
    ratelimit.enforce("RATE_VERIFY_RESENDS_PER_IP", message=message)
    ratelimit.enforce("RATE_VERIFY_RESENDS_PER_USER", str(user.id), message=message)
    if user.email_verified_at is None:
        _send_verification(user)
        db.session.commit()


def verify_email(token: str) -> User:
    """Mark the address verified. The link expires and works once."""
    data = _read_link(
        "verify", token, "EMAIL_TOKEN_MAX_AGE", "This confirmation link has expired. Log in to get a new one."
    )
    user = db.session.get(User, data.get("u"))
    if user is None or user.email != data.get("e"):
        raise BadToken()
    if user.email_verified_at is not None:
        raise BadToken("This confirmation link was already used.")
    user.email_verified_at = clock.now()
    db.session.commit()
    return user


# -- log-in --------------------------------------------------------------------------------------
def authenticate(email: Any, password: Any, *, staff_only: bool = False) -> User:
    """The user for these credentials, counting failures per account and per IP (429 beyond)."""
    cfg = current_app.config
    account = (email or "").strip().lower()[:254] if isinstance(email, str) else ""
    ip = _client_ip()
    window = cfg["LOGIN_THROTTLE_WINDOW_SECONDS"]
    # Count the attempt before checking the password, so guesses sent in parallel cannot all slip
    # under the limit; a successful log-in takes its attempt back.
    per_account = ratelimit.hit("login-account", account, window)
    per_ip = ratelimit.hit("login-ip", ip, window)
    over = [
        (w.retry_after, limit)
        for w, limit in (
            (per_account, cfg["LOGIN_MAX_FAILURES_PER_ACCOUNT"]),
            (per_ip, cfg["LOGIN_MAX_FAILURES_PER_IP"]),
        )
        if w.count > limit
    ]
    if over:
        raise Throttled(*max(over))  # the limit that keeps the client out longest
    user = user_by_email(account) if account else None
    ok = verify_password(user.password_hash if user else None, password if isinstance(password, str) else "")
    if user is None or not ok or not user.is_active or (staff_only and not user.is_staff):
        raise BadCredentials()
    ratelimit.clear("login-account", account)
    ratelimit.take_back("login-ip", ip)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = clock.now()
    db.session.commit()
    return user


def load_session_user(session_id: str) -> User | None:
    """The user of "<id>:<credentials_version>:<session_version>"; an old version means logged out."""
    try:
        user_id, credentials, sessions = (int(x) for x in session_id.split(":"))
    except (ValueError, AttributeError):
        return None
    if not 0 < user_id < 2**31:
        return None
    user = db.session.get(User, user_id)
    if (
        user is None
        or not user.is_active
        or (user.credentials_version, user.session_version) != (credentials, sessions)
    ):
        return None
    return user


def end_sessions(user: User, *, commit: bool = True) -> None:
    """Log `user` out of every browser: each copy of their session and remember-me cookies stops working.

    The back-office passes commit=False when this is part of its own change (a staff deactivation)."""
    user.session_version = (user.session_version or 1) + 1
    if commit:
        db.session.commit()


# -- passwords -----------------------------------------------------------------------------------
def _set_password(user: User, new_password: str) -> None:
    if problem := password_problem(new_password):
        raise ValidationError({"password": problem})
    user.password_hash = hash_password(new_password)
    user.credentials_version += 1  # ends every session and API token minted before now
    notify(
        "account.password_changed",
        user.email,
        {"name": user.name, "link": external_url("storefront.reset_request")},
        key=f"user:{user.id}:password:{user.credentials_version}",
    )


def change_password(user: User, current_password: str, new_password: str) -> None:
    if not verify_password(user.password_hash, current_password or ""):
        raise ValidationError({"current_password": "is not your current password"})
    _set_password(user, new_password)
    db.session.commit()


def request_password_reset(email: Any) -> None:
    """Mail a reset link when the account exists; say nothing either way (no account probing).

    Rate-limited per IP and per address asked for, whether or not it has an account (429 the same)."""
    message = "Too many password-reset requests just now; check your inbox, or try again later."
    ratelimit.enforce("RATE_RESETS_PER_IP", message=message)
    try:
        email = normalise_email(email)
    except ValidationError:
        return
    ratelimit.enforce("RATE_RESETS_PER_EMAIL", email, message=message)
    user = user_by_email(email)
    if user is None or not user.is_active:
        return
    token = _serializer("reset").dumps({"u": user.id, "p": _fingerprint(user.password_hash)})
    notify(
        "account.password_reset",
        user.email,
        {
            "name": user.name,
            "link": external_url("storefront.reset_password", token=token),
            "minutes": current_app.config["RESET_TOKEN_MAX_AGE"] // 60,
        },
        key=f"user:{user.id}:reset:{digest(token)}",
    )  # each request mails its own link
    db.session.commit()


def reset_user(token: str) -> User:
    """The user a reset link belongs to; BadToken when expired, altered or already used."""
    data = _read_link("reset", token, "RESET_TOKEN_MAX_AGE", "This reset link has expired. Ask for a new one.")
    user = db.session.get(User, data.get("u"))
    if user is None or data.get("p") != _fingerprint(user.password_hash):
        raise BadToken("This reset link was already used. Ask for a new one.")
    return user


def reset_password(token: str, new_password: str) -> User:
    user = reset_user(token)
    _set_password(user, new_password)
    if user.email_verified_at is None:  # they proved they read the mailbox
        user.email_verified_at = clock.now()
    db.session.commit()
    return user


# -- address book --------------------------------------------------------------------------------
ADDRESS_FIELDS = {
    "name": (True, 120),
    "line1": (True, 200),
    "line2": (False, 200),
    "city": (True, 120),
    "region": (False, 120),
    "postal_code": (True, 20),
    "country": (True, 2),
    "phone": (False, 40),
}


def clean_address(data: Any) -> dict[str, Any]:
    """Validated address fields, or ValidationError naming each bad one."""
    if not isinstance(data, dict):
        raise ValidationError({"body": "must be an object"})
    clean, fields = {}, {}
    for key, (required, max_len) in ADDRESS_FIELDS.items():
        value = data.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                fields[key] = "is required"
            clean[key] = ""
            continue
        if not isinstance(value, str):
            fields[key] = "must be text"
            continue
        value = value.strip()
        if len(value) > max_len:
            fields[key] = f"must be at most {max_len} characters"
        clean[key] = value
    country = clean.get("country", "")
    if country and not (len(country) == 2 and country.isalpha()):
        fields["country"] = "must be a two-letter ISO country code"
    clean["country"] = country.upper()
    if not fields:  # a country that exists; a known region where tax depends on it (kept as its code)
        from shop import geo
        from shop.pricing import tax_table

        clean, problems = geo.address_problems(clean, tax_table().rates)
        fields.update(problems)
    if fields:
        raise ValidationError(fields)
    return clean


def add_address(user: User, data: Any) -> Address:
    address = Address(user_id=user.id, **clean_address(data))
    db.session.add(address)
    db.session.commit()
    return address


def delete_address(user: User, address_id: int) -> bool:
    address = db.session.get(Address, address_id)
    if address is None or address.user_id != user.id:
        return False
    db.session.delete(address)
    db.session.commit()
    return True


# -- staff ---------------------------------------------------------------------------------------
def create_staff(email: str, role: str, password: str, name: str = "") -> User:
    """A staff account (verified, with a role). Used by `flask staff create` and the back-office."""
    if role not in ROLES:
        raise ValidationError({"role": f"must be one of {', '.join(ROLES)}"})
    email = normalise_email(email)
    if problem := password_problem(password):
        raise ValidationError({"password": problem})
    if user_by_email(email):
        raise EmailTaken()
    user = User(email=email, name=name, role=role, password_hash=hash_password(password), email_verified_at=clock.now())
    db.session.add(user)
    db.session.commit()
    return user
