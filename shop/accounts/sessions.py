"""Browser sessions, storefront and back-office alike, over Flask-Login's signed cookie.

The cookie names "<user id>:<credentials_version>:<session_version>" (User.get_id). Log-out and staff
deactivation bump session_version, so every copy of every session and remember-me cookie of that user
stops at once; a password change bumps credentials_version, which also ends their API tokens.
Staff sessions carry their log-in and last-seen times (in the signed cookie) and end after
STAFF_SESSION_HOURS, or after STAFF_IDLE_MINUTES without a request. Staff get no remember-me cookie.
"""

from __future__ import annotations

import time

from flask import current_app, has_request_context, session
from flask_login import current_user, login_user, logout_user

from shop.accounts import services
from shop.accounts.models import User

LOGIN_AT, SEEN_AT = "login_at", "seen_at"
SEEN_EVERY = 60  # seconds between last-seen updates, so the cookie is not re-sent on every request


def stamp(sess, now: int | None = None) -> None:
    """Start the clocks of a session that has just logged in."""
    now = int(time.time()) if now is None else now
    sess[LOGIN_AT] = sess[SEEN_AT] = now


def log_in(user: User, remember: bool = False) -> None:
    """Log `user` into this browser; staff sessions are never remembered beyond the browser."""
    login_user(user, remember=remember and not user.is_staff)
    stamp(session)


def log_out() -> None:
    """Log out here and everywhere: every copy of this user's session cookies stops working."""
    if current_user.is_authenticated:
        services.end_sessions(current_user)
    logout_user()
    session.pop(LOGIN_AT, None)
    session.pop(SEEN_AT, None)


def _staff_session_current() -> bool:
    """Within the staff limits; moves the idle clock on. A session without clocks is not current."""
    cfg = current_app.config
    now = int(time.time())
    login_at, seen_at = session.get(LOGIN_AT), session.get(SEEN_AT)
    if not isinstance(login_at, int) or not isinstance(seen_at, int):
        return False
    if now - login_at > cfg["STAFF_SESSION_HOURS"] * 3600 or now - seen_at > cfg["STAFF_IDLE_MINUTES"] * 60:
        return False
    if now - seen_at >= SEEN_EVERY:
        session[SEEN_AT] = now
    return True


def load_user(session_id: str) -> User | None:
    """Flask-Login's loader: the session's user while its versions match and, for staff, its clocks."""
    user = services.load_session_user(session_id)
    if user is not None and user.is_staff and has_request_context() and not _staff_session_current():
        return None
    return user
