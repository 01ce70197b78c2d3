"""Accounts: sign-up, login, roles and tokens."""

import pymongo.errors
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from flask_jwt_extended import create_access_token

from flashcart.errors import Conflict, Unauthorized
from flashcart.extensions import stores
from flashcart.stores import as_utc, object_id_or_none, utcnow

USER, ADMIN = "user", "admin"
ROLES = (USER, ADMIN)


class EmailTaken(Conflict):
    """An account with this email already exists."""

    code = "email_taken"


class InvalidCredentials(Unauthorized):
    """The email or password is wrong."""

    code = "invalid_credentials"


def normalise_email(email):
    return email.strip().lower()


def _hasher():
    app = current_app
    hasher = app.extensions.get("flashcart.password_hasher")
    if hasher is None:
        hasher = PasswordHasher(
            time_cost=app.config["ARGON2_TIME_COST"],
            memory_cost=app.config["ARGON2_MEMORY_KIB"],
            parallelism=app.config["ARGON2_PARALLELISM"],
        )
        # Verified when no such user exists, so both failures cost the same time.
        app.extensions["flashcart.dummy_hash"] = hasher.hash("no such user")
        app.extensions["flashcart.password_hasher"] = hasher
    return hasher


def _users():
    return stores.db.users


def public(user):
    return {
        "id": str(user["_id"]),
        "email": user["email"],
        "name": user["name"],
        "role": user["role"],
        "created_at": as_utc(user["created_at"]),
    }


def register(*, email, password, name, role=USER):
    """Create an account. Sign-up always passes the default role."""
    now = utcnow()
    user = {
        "email": normalise_email(email),
        "name": name,
        "password_hash": _hasher().hash(password),
        "role": role,
        "created_at": now,
        "updated_at": now,
    }
    try:
        _users().insert_one(user)
    except pymongo.errors.DuplicateKeyError:
        raise EmailTaken() from None
    return public(user)


def authenticate(*, email, password):
    """The account for these credentials; raises InvalidCredentials otherwise."""
    hasher = _hasher()
    user = _users().find_one({"email": normalise_email(email)})
    stored = user["password_hash"] if user else current_app.extensions["flashcart.dummy_hash"]
    try:
        hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        raise InvalidCredentials() from None
    if user is None:
        raise InvalidCredentials()
    if hasher.check_needs_rehash(stored):
        _users().update_one(
            {"_id": user["_id"]}, {"$set": {"password_hash": hasher.hash(password)}}
        )
    return public(user)


def issue_token(user):
    expires = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    token = create_access_token(identity=user["id"], additional_claims={"role": user["role"]})
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": int(expires.total_seconds()),
        "user": user,
    }


def login(*, email, password):
    return issue_token(authenticate(email=email, password=password))


def get_user(user_id):
    oid = object_id_or_none(user_id)
    user = _users().find_one({"_id": oid}) if oid else None
    return public(user) if user else None


def ensure_admin(*, email, password=None, name="Administrator"):
    """Make sure an admin with this email exists; safe to run twice.

    Returns (user, created). An existing account is promoted to admin; its
    password is changed only when one is given.
    """
    email = normalise_email(email)
    existing = _users().find_one({"email": email})
    if existing is None:
        if not password:
            raise ValueError("a password is needed to create a new admin")
        try:
            return register(email=email, password=password, name=name, role=ADMIN), True
        except EmailTaken:
            existing = _users().find_one({"email": email})
    changes = {"role": ADMIN, "updated_at": utcnow()}
    if password:
        changes["password_hash"] = _hasher().hash(password)
    _users().update_one({"_id": existing["_id"]}, {"$set": changes})
    return public({**existing, **changes}), False
