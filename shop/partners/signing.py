"""Endpoint secrets and the Standard Webhooks signature.

A secret is `whsec_` + base64 of 32 random bytes: shown to the admin once, then kept only encrypted (Fernet, with a
key derived from the app's SECRET_KEY), so a copy of the database does not let anyone forge the shop's webhooks.
Changing SECRET_KEY makes the stored secrets unreadable: the endpoints' deliveries then fail with a message saying
so, and the endpoints must be registered again.

The signature (https://www.standardwebhooks.com): `v1,` + base64 HMAC-SHA256, keyed with the secret's decoded
bytes, over "{webhook-id}.{webhook-timestamp}.{body}".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "whsec_"
SECRET_BYTES = 32


class SecretUnreadable(RuntimeError):
    """The stored secret cannot be decrypted (SECRET_KEY changed since the endpoint was registered)."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _fernet(app_secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"shop.partners webhook secrets").derive(
        app_secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret: str, app_secret_key: str) -> str:
    return _fernet(app_secret_key).encrypt(secret.encode()).decode()


def unseal(sealed: str, app_secret_key: str) -> str:
    try:
        return _fernet(app_secret_key).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "the endpoint's secret cannot be decrypted (SECRET_KEY changed since it was "
            "registered): delete the endpoint and register it again"
        ) from None


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The webhook-signature header's value for one message."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()
